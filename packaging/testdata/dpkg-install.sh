#!/bin/sh
# dpkg-install.sh DEB DIR: the README's install, for real, on this host's Debian
# seen through a throwaway overlay: run by TestDpkgInstall inside
# `unshare --mount --net --pid --fork --mount-proc`, so every mount, the
# loopback network and every process (Postfix, leadpush-milter, the sink)
# vanish when it exits, and nothing of the host changes (the overlay's
# upper layer is a tmpfs mounted on DIR, an empty directory). Exit status 3:
# this kernel or sandbox cannot mount the overlay.
#
# Inside: dpkg -i the package; a stock Debian main.cf (main.cf.debian, as
# postfix's postinst lays it out, plus loopback-only settings and a relay
# to smtp-sink) with Debian's own chrooted master.cf; leadpush.toml edited;
# leadpushctl postfix setup --apply; leadpush-milter as user leadpush;
# configure-instance.sh and postfix start, as Debian's postfix service
# does; the seed's swaks example on port 25. Lines starting "CHECK " are
# what the test reads.
set -eu
deb=$1 ov=$2
mount --make-rprivate / || exit 3
mount -t tmpfs tmpfs "$ov" || exit 3
mkdir "$ov/upper" "$ov/work" "$ov/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$ov/upper,workdir=$ov/work" "$ov/root" || exit 3
mount --bind /proc "$ov/root/proc"
mount --bind /dev "$ov/root/dev"
mount -t tmpfs tmpfs "$ov/root/run"
cp "$deb" "$ov/root/tmp/leadpush.deb"
exec chroot "$ov/root" /bin/sh -eu -c '
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
ip link set lo up
echo "CHECK fresh $(test -e /etc/leadpush && echo no || echo yes) $(test -e /etc/postfix/main.cf && echo no || echo yes)"

dpkg -i /tmp/leadpush.deb >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; exit 1; }
echo "CHECK user $(getent passwd leadpush | cut -d: -f1,6,7)"
echo "CHECK config $(stat -c "%U:%G %a" /etc/leadpush/leadpush.toml)"
echo "CHECK socketdir $(stat -c "%U:%G %a" /var/spool/postfix/leadpush)"

# Debian stock Postfix: main.cf.debian with the loopback settings a test
# needs, Debian master.cf (smtpd and cleanup chrooted), no syslog: postlogd.
cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
postconf -e myhostname=mail.example.test mydestination=localhost inet_interfaces=loopback-only \
	inet_protocols=ipv4 "relayhost=[127.0.0.1]:2525" smtp_dns_support_level=disabled \
	maillog_file=/var/log/mail.log alias_maps= alias_database= smtpd_tls_security_level=none
echo "CHECK chroot $(postconf -F smtp/inet/chroot cleanup/unix/chroot | tr "\n" " ")"

# Step 3: edit leadpush.toml.
key=$(leadpushctl keygen 2026a)
sed -i -e "s|2026a:REPLACE-WITH-OUTPUT-OF-leadpushctl-keygen|$key|" \
	-e "s|whsec_REPLACE|whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=|" /etc/leadpush/leadpush.toml
su -s /bin/sh leadpush -c "leadpush-milter -check-config" | sed "s/^/CHECK milter-check /"

# Step 4: postfix setup, twice.
leadpushctl postfix setup --apply >/tmp/setup.log
leadpushctl postfix setup | grep -q "nothing to do" && echo "CHECK setup idempotent"
echo "CHECK smtpd_milters $(postconf -h smtpd_milters)"

# Step 6: the milter as the unit runs it (user leadpush), then Postfix as
# Debian starts it (configure-instance.sh copies etc files into the chroot).
mkdir -m 1777 /tmp/sink
smtp-sink -u nobody -d /tmp/sink/%M. 127.0.0.1:2525 10 &
su -s /bin/sh leadpush -c "exec leadpush-milter" >/tmp/milter.log 2>&1 &
i=0; until [ -S /var/spool/postfix/leadpush/milter.sock ]; do i=$((i+1)); [ $i -lt 200 ] || { cat /tmp/milter.log; exit 1; }; sleep 0.05; done
/usr/lib/postfix/configure-instance.sh - >/dev/null
postfix start >/dev/null 2>&1

# Step 8: the seed example on port 25.
i=0; until swaks --server 127.0.0.1:25 --quit-after EHLO >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done
swaks --server 127.0.0.1:25 --from app@example.com --to customer@example.com \
	--header "Subject: Your password reset link" --header "X-Leadpush-Tag: \"password reset\"" \
	--header "X-Leadpush-Tracking: clicks" \
	--body "Use this link to reset your password: https://example.com/reset" >/tmp/swaks.log 2>&1 ||
	{ cat /tmp/swaks.log; tail -20 /var/log/mail.log; exit 1; }
i=0; until grep -q "status=sent" /var/log/mail.log; do i=$((i+1)); [ $i -lt 200 ] || { tail -20 /var/log/mail.log; exit 1; }; sleep 0.05; done
echo "CHECK sent $(grep -c status=sent /var/log/mail.log)"
echo "CHECK control-headers $(cat /tmp/sink/* | grep -ci "^x-leadpush" || true)"
echo "CHECK list-unsubscribe $(cat /tmp/sink/* | grep -ci "^list-unsubscribe:" || true)"
i=0; until su -s /bin/sh leadpush -c "leadpushctl messages --json" | grep -q "password reset"; do i=$((i+1)); [ $i -lt 100 ] || break; sleep 0.05; done
echo "CHECK recorded $(su -s /bin/sh leadpush -c "leadpushctl messages --json" | grep -c "\"tag\":\"password reset\"")"
echo "CHECK ledger-owner $(stat -c %U /var/lib/leadpush/leadpush.db)"
postfix stop >/dev/null 2>&1 || true
'
