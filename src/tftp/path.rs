//! Turning a requested file name into a relative path below the TFTP root.
//!
//! This is the lexical half of containment: it refuses names that try to
//! climb (`..`), that use `\` as a separator, and names too long to be
//! honest. A leading `/` is dropped because PXE ROMs often send one. The name
//! is taken literally: no URL decoding, no case folding, no character set
//! conversion (a file name is bytes).
//!
//! The other half is the engine's: it opens the result relative to the root
//! with the kernel refusing any symlink that leads out (`openat2` with
//! `RESOLVE_BENEATH` on Linux), so a link inside the root cannot escape it
//! either.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Longest name accepted, in bytes; longer ones are refused outright.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest path component, as on common file systems.
const MAX_COMPONENT_LEN: usize = 255;

/// Why a name is refused. Each maps to TFTP ERROR 2 (access violation)
/// except [`PathError::Empty`], which is ERROR 1 (file not found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    Empty,
    TooLong,
    ParentComponent,
    Backslash,
}

impl PathError {
    /// Short reason for the debug log.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::Empty => "empty file name",
            PathError::TooLong => "file name too long",
            PathError::ParentComponent => "`..` in file name",
            PathError::Backslash => "backslash in file name",
        }
    }
}

/// Returns the relative path for `name`, or why it is refused.
pub fn resolve(name: &[u8]) -> Result<PathBuf, PathError> {
    if name.len() > MAX_NAME_LEN {
        return Err(PathError::TooLong);
    }
    if name.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    let mut path = PathBuf::new();
    for component in name.split(|&b| b == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => return Err(PathError::ParentComponent),
            c if c.len() > MAX_COMPONENT_LEN => return Err(PathError::TooLong),
            c => path.push(OsStr::from_bytes(c)),
        }
    }
    if path.as_os_str().is_empty() {
        return Err(PathError::Empty);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bc_08_traversal_names_are_refused() {
        assert_eq!(
            resolve(b"../tftp-private/secret.bin"),
            Err(PathError::ParentComponent)
        );
        assert_eq!(
            resolve(b"pxelinux.cfg/../../tftp-private/secret.bin"),
            Err(PathError::ParentComponent)
        );
        assert_eq!(
            resolve(b"..\\tftp-private\\secret.bin"),
            Err(PathError::Backslash)
        );
        assert_eq!(resolve(b"a/.."), Err(PathError::ParentComponent));
        assert_eq!(resolve(&[b'a'; 2000]), Err(PathError::TooLong));
        assert_eq!(resolve(&[b'a'; 300]), Err(PathError::TooLong));
        assert_eq!(resolve(b"/"), Err(PathError::Empty));
        assert_eq!(resolve(b""), Err(PathError::Empty));
    }

    #[test]
    fn bc_08_absolute_paths_stay_below_the_root() {
        // A leading slash is dropped: /srv/tftp-private/... is looked up as
        // srv/tftp-private/... below the root, where it does not exist.
        assert_eq!(
            resolve(b"/srv/tftp-private/secret.bin").unwrap(),
            PathBuf::from("srv/tftp-private/secret.bin")
        );
        assert_eq!(
            resolve(b"/pxelinux.cfg/default").unwrap(),
            PathBuf::from("pxelinux.cfg/default")
        );
        assert_eq!(
            resolve(b"pxelinux.cfg//./default").unwrap(),
            PathBuf::from("pxelinux.cfg/default")
        );
    }

    #[test]
    fn bc_08_names_are_literal() {
        assert_eq!(
            resolve(b"pxelinux.cfg/%2e%2e/default").unwrap(),
            PathBuf::from("pxelinux.cfg/%2e%2e/default")
        );
        assert_eq!(resolve(b"...").unwrap(), PathBuf::from("..."));
    }

    #[test]
    fn bc_12_non_utf8_name_is_kept_as_bytes() {
        let p = resolve(b"ipxe.efi\xff").unwrap();
        assert_eq!(p.as_os_str().as_bytes(), b"ipxe.efi\xff");
    }
}
