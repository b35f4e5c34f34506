//! The version of the libext2fs in use (the shared library loaded at run time, not the headers
//! the bindings were made from), for `--version`.

use std::ffi::CStr;

use ext2fs_sys as sys;

/// libext2fs's version and release date, as `ext2fs_get_library_version` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryVersion {
    /// The version, e.g. "1.47.0".
    pub version: String,
    /// The release date, e.g. "5-Feb-2023".
    pub date: String,
}

/// The version of the libext2fs this process uses.
pub fn library_version() -> LibraryVersion {
    let mut version: *const std::os::raw::c_char = std::ptr::null();
    let mut date: *const std::os::raw::c_char = std::ptr::null();
    // SAFETY: the call only stores two pointers to static NUL-terminated strings of the library
    // (E2FSPROGS_VERSION and E2FSPROGS_DATE) in the locations given, which are valid and ours.
    unsafe { sys::ext2fs_get_library_version(&mut version, &mut date) };
    let text = |p: *const std::os::raw::c_char| {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: non-null pointers from the call above point to static C strings that live as
        // long as the library stays loaded (the whole process).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    LibraryVersion {
        version: text(version),
        date: text(date),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_dotted_version_and_a_date() {
        let v = library_version();
        let parts: Vec<&str> = v.version.split('.').collect();
        assert!(
            parts.len() >= 2 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
            "{v:?}"
        );
        assert!(!v.date.is_empty(), "{v:?}");
    }
}
