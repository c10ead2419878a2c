# make demo: build both programs and run the main job end to end (local
# STARTTLS+AUTH test upstream, private spool, sendmail -t -i, delivery),
# no root, no network. See test/demo/demo.sh.
.PHONY: demo
demo:
	@test/demo/demo.sh
