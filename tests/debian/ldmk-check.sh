#!/bin/sh
# Run at boot by ldmk-check.service in the Debian that tests/boot_debian.rs boots: waits until
# the boot has finished, checks what a system that boots and writes needs, prints one line
#   LDMK-CHECK state=... failed=... journal=... write=... setuid=... setgid=... caps=... avail=...
# on the console (the test reads it there) and powers off.

state=$(systemctl is-system-running --wait 2>&1)
failed=$(systemctl list-units --state=failed --plain --no-legend --no-pager | awk '{print $1}' | paste -sd, -)
[ -n "$failed" ] || failed=none
# Persistent: journald writes under /var/log/journal/MACHINE-ID, not /run/log/journal.
journalctl --flush >/dev/null 2>&1
if [ -s "/var/log/journal/$(cat /etc/machine-id)/system.journal" ]; then
	journal=persistent
else
	journal=volatile
fi
# 20 MiB written and synced by an ordinary user (nobody).
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
if nobody dd if=/dev/zero of=/var/tmp/ldmk-write bs=1M count=20 conv=fsync status=none &&
	[ "$(stat -c %s /var/tmp/ldmk-write)" = 20971520 ]; then
	write=ok
else
	write=failed
fi
# setuid root (passwd reads /etc/shadow for nobody) and setgid shadow (chage) do their work.
if nobody passwd -S nobody >/dev/null 2>&1; then setuid=ok; else setuid=failed; fi
if nobody chage -l nobody >/dev/null 2>&1; then setgid=ok; else setgid=failed; fi
caps=$(getcap /usr/bin/ping | awk '{print $2}')
avail=$(df --output=avail -B1 / | tail -n 1 | tr -d ' ')
echo "LDMK-CHECK state=$state failed=$failed journal=$journal write=$write setuid=$setuid setgid=$setgid caps=${caps:-none} avail=$avail"
sync
systemctl poweroff
