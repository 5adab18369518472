#!/usr/bin/env bash
# deps.sh - install what Leadpush's tests and demo need on Debian 12 (idempotent).
#
#   sudo scripts/deps.sh          # installs only what is missing; no-op otherwise
#
# Postfix is preseeded with "No configuration": /etc/postfix/main.cf stays
# absent and nothing is started; the tests run private instances
# (internal/postfixlab). apt-get update runs only when something is missing.
set -euo pipefail

say() { echo "deps: $*" >&2; }
die() { say "$*"; exit 1; }

pkgs=(postfix swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl sasl2-bin
	libsasl2-modules openssl iproute2 opendkim opendkim-tools chromium procps ca-certificates make sqlite3 curl
	wrk nginx-light)
# packaging/deb_test.go: lintian, systemd-analyze (systemd), man (man-db)
pkgs+=(lintian systemd man-db)

# One dpkg-query for all: a package is present when its status is "install ok installed".
declare -A ok=()
while read -r pkg status; do
	[[ $status == "install ok installed" ]] && ok[$pkg]=1
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null || true)
missing=()
for pkg in "${pkgs[@]}"; do [[ -n ${ok[$pkg]:-} ]] || missing+=("$pkg"); done

if ((${#missing[@]})); then
	[[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; run as root: sudo $0"
	command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get (Debian 12 expected)"
	say "installing: ${missing[*]}"
	# "No configuration": no /etc/postfix/main.cf, no system instance started.
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	export DEBIAN_FRONTEND=noninteractive
	# Install without starting anything: Debian's postinst scripts would
	# start system nginx and opendkim services the tests do not use. A
	# policy-rc.d that answers 101 ("action forbidden") stops that, and is
	# removed afterwards unless one was there before.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	apt-get update -qq
	# --no-install-recommends: the perl TLS/SASL modules swaks needs are listed explicitly.
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	say "all packages present"
fi

# --- Sendmail (issue 21) ------------------------------------------------
# Debian's Sendmail unpacked next to Postfix, never installed (it would
# remove Postfix); internal/sendmaillab runs it. Its own script so this
# file's package list stays Postfix's.
"$(dirname "$0")/deps-sendmail.sh"
# --- end Sendmail ----------------------------------------------------------
# --- Node.js and npm (issue 18) ---------------------------------------------
# notify/webhook's TestStandardWebhooksNode verifies captured webhook requests
# with the official Standard Webhooks library for Node (npm "standardwebhooks",
# pinned in notify/webhook/testdata/node/package-lock.json); the test runs
# "npm ci" into a temporary directory. A node already on PATH (Node 20 from
# NodeSource, nvm, ...) is used as it is; otherwise Debian's packages.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
	say "node: $(command -v node) ($(node --version)), npm $(npm --version)"
else
	[[ $(id -u) -eq 0 ]] || die "missing node/npm; run as root: sudo $0"
	say "installing: nodejs npm"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
fi
# ------------------------------------------------------------------------------

# Go: the Makefile and tests expect go on PATH.
if command -v go >/dev/null 2>&1; then
	say "go: $(command -v go) ($(go version | awk '{print $3}'))"
elif [[ -x /usr/local/go/bin/go ]]; then
	say "go: /usr/local/go/bin/go is not on PATH; add it: export PATH=\$PATH:/usr/local/go/bin"
else
	die "no Go toolchain: looked on PATH and at /usr/local/go/bin/go (install Go 1.26 from https://go.dev/dl/)"
fi
