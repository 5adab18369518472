//go:build !unix

package maillog

import "io/fs"

// inode returns 0: the platform has no inode numbers; positions then rely
// on the offset and the head fingerprint alone.
func inode(fs.FileInfo) uint64 { return 0 }
