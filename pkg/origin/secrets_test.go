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
