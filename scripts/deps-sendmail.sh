#!/usr/bin/env bash
# deps-sendmail.sh - unpack Debian 12's Sendmail for the tests (idempotent).
#
#   sudo scripts/deps-sendmail.sh     # called by scripts/deps.sh
#
# Installing the sendmail packages would remove Postfix (they conflict), so
# they are never installed: sendmail-bin, sendmail-base and sendmail-cf are
# downloaded and unpacked with dpkg -x under $SENDMAILLAB_ROOT (default
# /opt/leadpush-lab/sendmail), where internal/sendmaillab finds them. Only
# m4 and libwrap0 (which conflict with nothing) are installed with apt.
# The private copy of the binary loses its setgid bit: it is run by root
# for private instances only.
set -euo pipefail

say() { echo "deps-sendmail: $*" >&2; }
die() { say "$*"; exit 1; }

root=${SENDMAILLAB_ROOT:-/opt/leadpush-lab/sendmail}
debs=(sendmail-bin sendmail-base sendmail-cf)
stamp=$root/.leadpush-unpacked

# The stamp names the versions unpacked: a new Debian point release is
# unpacked again.
want=$(apt-cache policy "${debs[@]}" 2>/dev/null | awk '/^[^ ]/{p=$1} /Candidate:/{print p, $2}' | sort | tr '\n' ' ')
have=$(cat "$stamp" 2>/dev/null || true)
apt_ok=1
for pkg in m4 libwrap0; do
	[[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || apt_ok=0
done
if [[ $apt_ok -eq 1 && -n $have && ( $have == "$want" || $want == "" ) && -x $root/usr/libexec/sendmail/sendmail ]]; then
	say "sendmail present in $root"
	exit 0
fi
[[ $(id -u) -eq 0 ]] || die "Sendmail lab missing; run as root: sudo $0"
command -v apt-get >/dev/null 2>&1 || die "no apt-get (Debian 12 expected)"
export DEBIAN_FRONTEND=noninteractive
lock=(-o DPkg::Lock::Timeout=300)
if [[ $apt_ok -eq 0 ]]; then
	say "installing m4 libwrap0"
	apt-get "${lock[@]}" install -y -qq --no-install-recommends m4 libwrap0 >/dev/null ||
		{ apt-get "${lock[@]}" update -qq && apt-get "${lock[@]}" install -y -qq --no-install-recommends m4 libwrap0 >/dev/null; }
fi
if [[ -z $want ]]; then
	apt-get "${lock[@]}" update -qq
	want=$(apt-cache policy "${debs[@]}" | awk '/^[^ ]/{p=$1} /Candidate:/{print p, $2}' | sort | tr '\n' ' ')
fi
tmp=$(mktemp -d)
chmod 755 "$tmp" # apt-get download fetches as user _apt
trap 'rm -rf "$tmp"' EXIT
say "downloading ${debs[*]}"
(cd "$tmp" && apt-get "${lock[@]}" download -qq "${debs[@]}" >/dev/null) ||
	{ apt-get "${lock[@]}" update -qq && (cd "$tmp" && apt-get download -qq "${debs[@]}" >/dev/null); }
rm -rf "$root.new"
mkdir -p "$root.new"
for f in "$tmp"/*.deb; do dpkg -x "$f" "$root.new"; done
chmod g-s "$root.new/usr/libexec/sendmail/sendmail" "$root.new/usr/libexec/sendmail/mailstats" 2>/dev/null || true
[[ -x $root.new/usr/libexec/sendmail/sendmail && -f $root.new/usr/share/sendmail/cf/m4/cf.m4 ]] ||
	die "unexpected package layout in $root.new"
echo "$want" >"$root.new/.leadpush-unpacked"
rm -rf "$root"
mv "$root.new" "$root"
say "unpacked into $root: $want"
