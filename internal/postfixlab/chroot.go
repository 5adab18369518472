package postfixlab

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// chrootFiles are what Debian's /usr/lib/postfix/configure-instance.sh
// (run by the postfix service before every start) copies into the queue
// directory when a service is chrooted: name-service and time files.
var chrootFiles = []string{"etc/localtime", "etc/services", "etc/resolv.conf", "etc/hosts",
	"etc/host.conf", "etc/nsswitch.conf", "etc/nss_mdns.config"}

// chrootLibs are the glob patterns of the libraries it copies (gcc_s, nss,
// resolv): glibc loads the NSS modules at run time, inside the chroot.
var chrootLibs = []string{"/lib/*/libgcc_s*.so*", "/lib/*/libnss*.so*", "/lib/*/libresolv*.so*",
	"/lib/libgcc_s*.so*", "/lib/libnss*.so*", "/lib/libresolv*.so*"}

// prepareChroot does for spool what configure-instance.sh does for
// /var/spool/postfix: the files above, the libraries, and /dev/random and
// /dev/urandom (character devices 1,8 and 1,9). A device node that cannot
// be made (no CAP_MKNOD in a container) is logged, not fatal: Postfix
// seeds its PRNG before it enters the chroot.
func prepareChroot(spool string, logf func(string, ...any)) error {
	var names []string
	names = append(names, chrootFiles...)
	for _, pat := range chrootLibs {
		m, _ := filepath.Glob(pat)
		for _, f := range m {
			names = append(names, strings.TrimPrefix(f, "/"))
		}
	}
	for _, name := range names {
		src := "/" + name
		fi, err := os.Stat(src)
		if errors.Is(err, os.ErrNotExist) || err == nil && !fi.Mode().IsRegular() {
			continue
		}
		if err != nil {
			return err
		}
		if err := copyFile(src, filepath.Join(spool, name)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(spool, "dev"), 0o755); err != nil {
		return err
	}
	for name, minor := range map[string]int{"random": 8, "urandom": 9} {
		p := filepath.Join(spool, "dev", name)
		if err := syscall.Mknod(p, syscall.S_IFCHR|0o666, 1<<8|minor); err != nil && !errors.Is(err, os.ErrExist) {
			logf("postfixlab: chroot: mknod %s: %v (continuing)", p, err)
		}
	}
	return nil
}

// copyFile copies src's content to dst (mode a+r, as the Debian script
// leaves it), making dst's directory.
func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
