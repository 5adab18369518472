#!/usr/bin/env bash
# deb.sh - build the Debian package: bin/leadpush_VERSION_amd64.deb.
#
#   scripts/deb.sh              # or: make deb
#   VERSION=1.0.0 scripts/deb.sh
#   OUT=/tmp/x scripts/deb.sh   # output directory (default bin/)
#
# The programs are built with -trimpath, CGO_ENABLED=0 (static, pure-Go
# SQLite) and the version stamped into internal/version; nfpm
# (packaging/nfpm.yaml) is run at a pinned version with `go run pkg@version`,
# so it never enters the project's go.mod. VERSION defaults to the git tag
# (v1.2.3 -> 1.2.3) or, untagged, 0.0~gitYYYYMMDD.HASH of the last commit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
OUT=${OUT:-bin}

if [[ -z ${VERSION:-} ]]; then
	if tag=$(git describe --tags --exact-match 2>/dev/null); then
		VERSION=${tag#v}
	else
		VERSION=0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git log -1 --format=%h)
		git diff --quiet HEAD 2>/dev/null || VERSION+=+dirty
	fi
fi
[[ $VERSION =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || { echo "deb: VERSION $VERSION is not a Debian native version" >&2; exit 2; }
# Reproducible: every timestamp is the last commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/leadpush-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/usr/bin" "$STAGE/man" "$OUT"

CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false \
	-ldflags "-s -w -X github.com/leadpush/leadpush/internal/version.Version=$VERSION" \
	-o "$STAGE/usr/bin/" ./cmd/leadpush-milter ./cmd/leadpushd ./cmd/leadpushctl

for m in packaging/man/*.[0-9]; do
	gzip -9n <"$m" >"$STAGE/man/$(basename "$m").gz"
done
gzip -9n <README.md >"$STAGE/README.md.gz"

# The packaged configuration is the commented example, whose milter socket
# is the built-in default inside Postfix's chroot.
cp contrib/leadpush.toml "$STAGE/leadpush.toml"
grep -q '^listen = "unix:/var/spool/postfix/leadpush/milter.sock"' "$STAGE/leadpush.toml" ||
	{ echo "deb: contrib/leadpush.toml's [milter] listen is not the chrooted socket" >&2; exit 1; }

date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
commit=$(git log -1 --format=%H 2>/dev/null || echo unknown)
cat >"$STAGE/changelog" <<EOT
leadpush ($VERSION) unstable; urgency=medium

  * Built from commit $commit.

 -- Leadpush maintainers <maintainers@leadpush.invalid>  $date
EOT
gzip -9n "$STAGE/changelog"
touch -d "@$SOURCE_DATE_EPOCH" "$STAGE"/usr/bin/* "$STAGE"/man/* "$STAGE"/*.gz "$STAGE/leadpush.toml"

deb="$OUT/leadpush_${VERSION}_amd64.deb"
rm -f "$deb"
# nfpm expands ${VERSION} itself, not the paths of contents.
sed "s|\${STAGE}|$STAGE|g" packaging/nfpm.yaml >"$STAGE/nfpm.yaml"
VERSION=$VERSION go run "$NFPM" package --config "$STAGE/nfpm.yaml" --packager deb --target "$deb" >&2
echo "$deb"
