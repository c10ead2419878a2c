package origin

import (
	"strings"
	"testing"
)

func TestMaskArgs(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"swaks --to a@b --auth-password S1", "swaks --to a@b --auth-password [redacted]"},
		{"swaks -ap S1 -au u", "swaks -ap [redacted] -au u"},
		{"swaks --ap=S1", "swaks --ap=[redacted]"},
		{"curl -u alice:S1 https://x/", "curl -u alice:[redacted] https://x/"},
		{"curl -ualice:S1 https://x/", "curl -ualice:[redacted] https://x/"},
		{"curl --user=alice:S1 https://x/", "curl --user=alice:[redacted] https://x/"},
		{"curl -u alice https://x/", "curl -u alice https://x/"},
		{"mysql -uroot -pS1 shop", "mysql -uroot -p[redacted] shop"},
		{"mysql -p shop", "mysql -p shop"},
		{"mysql --password shop", "mysql --password shop"},
		{"mysql --password=S1 shop", "mysql --password=[redacted] shop"},
		{"sshpass -p S1 ssh host", "sshpass -p [redacted] ssh host"},
		{"sshpass -pS1 ssh host", "sshpass -p[redacted] ssh host"},
		{"ssh -p 2222 host", "ssh -p 2222 host"},
		{"wget --http-password S1 --passive-ftp http://x/", "wget --http-password [redacted] --passive-ftp http://x/"},
		{"docker login --password-stdin -u bob", "docker login --password-stdin -u bob"},
		{"msmtp --passwordeval 'pass show x'", "msmtp --passwordeval 'pass show x'"},
		{"psql --no-password db", "psql --no-password db"},
		{"openssl enc -pass pass:S1 -in f", "openssl enc -pass [redacted] -in f"},
		{"java -Dspring.datasource.password=S1 -jar app.jar", "java -Dspring.datasource.password=[redacted] -jar app.jar"},
		{"env DB_PASSWORD=S1 API_TOKEN=S2 ./run", "env DB_PASSWORD=[redacted] API_TOKEN=[redacted] ./run"},
		{"git clone https://bob:S1@git.example/r.git", "git clone https://bob:[redacted]@git.example/r.git"},
		{"git clone https://bob@git.example/r.git", "git clone https://bob@git.example/r.git"},
		{"tool --url=smtp://u:S1@h:587/x -- --password notanoption", "tool --url=smtp://u:[redacted]@h:587/x -- --password notanoption"},
		{"php /srv/send.php --to a@b", "php /srv/send.php --to a@b"},
	} {
		got := strings.Join(MaskArgs(strings.Fields(strings.ReplaceAll(c.in, "'pass show x'", "pass\x00show\x00x"))), " ")
		got = strings.ReplaceAll(got, "pass\x00show\x00x", "'pass show x'")
		if got != c.want {
			t.Errorf("MaskArgs(%s)\n got %s\nwant %s", c.in, got, c.want)
		}
	}
}

func TestMaskCmdline(t *testing.T) {
	p := Process{Cmdline: []string{"/usr/bin/curl", "-u", "al ice:it's S1", "-d", "a b"}}
	got := MaskCmdline(p.CmdlineString())
	if want := `/usr/bin/curl -u 'al ice:[redacted]' -d 'a b'`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if s := "/usr/bin/php /srv/a.php"; MaskCmdline(s) != s {
		t.Errorf("changed %q", s)
	}
}

// A shell's -c command (a cron job's line) is masked word by word, each
// simple command as a command line of its own; the rest is kept as it is.
func TestMaskShellCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // the -c command, masked
	}{
		{[]string{"/bin/sh", "-c", "mysqldump -uroot -pS1 shop | gzip | sendmail -t"}, "mysqldump -uroot -p[redacted] shop | gzip | sendmail -t"},
		{[]string{"bash", "-ec", "cd /srv && curl -s -u 'alice:S1' https://x/;sshpass -p \"S 2\" ssh h"}, "cd /srv && curl -s -u 'alice:[redacted]' https://x/;sshpass -p [redacted] ssh h"},
		{[]string{"sh", "-c", "MYSQL_PWD=S1 mysql -e 'select 1' db\n{ swaks -ap S2; }"}, "MYSQL_PWD=[redacted] mysql -e 'select 1' db\n{ swaks -ap [redacted]; }"},
		{[]string{"sh", "-c", "echo $(mysql -pS1 -e x) `redis-cli -a S2 get k` done"}, "echo $(mysql -p[redacted] -e x) `redis-cli -a [redacted] get k` done"},
		{[]string{"sh", "-c", "php /srv/cron.php --to a@b; echo 'mysql -pS1' > /dev/null"}, "php /srv/cron.php --to a@b; echo 'mysql -pS1' > /dev/null"},
		{[]string{"sh", "-c", "ends\\"}, "ends\\"},
		{[]string{"sh", "-c", "unclosed 'mysql -pS1"}, "unclosed 'mysql -pS1"},
	} {
		got := MaskArgs(c.args)
		if got[len(got)-1] != c.want {
			t.Errorf("MaskArgs(%q)\n got %q\nwant %q", c.args, got[len(got)-1], c.want)
		}
	}
	// Not a shell, or not its -c command: the words stay.
	for _, args := range [][]string{{"php", "-r", "mysql -pS1"}, {"sh", "/srv/job.sh", "mysql -pS1"}} {
		if got := MaskArgs(args); strings.Join(got, "\x00") != strings.Join(args, "\x00") {
			t.Errorf("MaskArgs(%q) = %q", args, got)
		}
	}
}

// FuzzMaskArgs: hostile command lines (sendmail reads its parent's) do
// not panic, and masking a masked command line changes nothing.
func FuzzMaskArgs(f *testing.F) {
	for _, s := range []string{"sh\x00-c\x00mysql -pS1 | x", "curl\x00-u\x00a:b", "x\x00a://b:c@d", "bash\x00-ec\x00'\\\"`(", "sh\x00-c\x00\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		once := MaskArgs(args)
		if twice := MaskArgs(once); strings.Join(twice, "\x00") != strings.Join(once, "\x00") {
			t.Fatalf("%q -> %q -> %q", args, once, twice)
		}
	})
}
