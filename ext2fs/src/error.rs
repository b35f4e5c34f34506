//! libext2fs errors: the failing call, the `errcode_t` and the library's own message for it
//! (com_err's `error_message`), looked up once when the error is made.

use std::ffi::CStr;
use std::fmt;
use std::sync::Mutex;

use ext2fs_sys as sys;

/// A libext2fs error. Displays as `call: message`, e.g.
/// `ext2fs_new_range: Could not allocate block in ext2 filesystem`.
#[derive(Debug, Clone)]
pub struct Error {
    call: &'static str,
    code: i64,
    message: String,
}

/// The result of a libext2fs call.
pub type Result<T> = std::result::Result<T, Error>;

/// Serialises `ldk_error_message`: com_err registers the table on first use and formats unknown
/// codes into a static buffer, neither of which is thread-safe.
static MESSAGE_LOCK: Mutex<()> = Mutex::new(());

impl Error {
    /// The error `code` returned by `call`, with the library's message for it.
    // errcode_t is a C long: the conversion does something on 32-bit targets only.
    #[allow(clippy::useless_conversion)]
    pub(crate) fn new(call: &'static str, code: sys::errcode_t) -> Error {
        Error {
            call,
            code: i64::from(code),
            message: message_of(code),
        }
    }

    /// An invalid argument to `call` (a name with a NUL byte, an unsupported value), refused
    /// before the library is asked.
    pub(crate) fn invalid_argument(call: &'static str) -> Error {
        Error::new(call, sys::EXT2_ET_INVALID_ARGUMENT as sys::errcode_t)
    }

    /// The libext2fs function that failed, e.g. `ext2fs_new_range`.
    pub fn call(&self) -> &'static str {
        self.call
    }

    /// The library's error code (`errcode_t`).
    pub fn code(&self) -> i64 {
        self.code
    }

    /// The library's own message for the code.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when the filesystem ran out of blocks or inodes.
    pub fn is_no_space(&self) -> bool {
        [
            sys::EXT2_ET_BLOCK_ALLOC_FAIL,
            sys::EXT2_ET_INODE_ALLOC_FAIL,
            sys::EXT2_ET_DIR_NO_SPACE,
        ]
        .iter()
        .any(|&c| c as i64 == self.code)
    }

    /// True when the code is `c` (for tests inside the crate).
    #[cfg(test)]
    pub(crate) fn is(&self, c: u32) -> bool {
        self.code == c as i64
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.call, self.message)
    }
}

impl std::error::Error for Error {}

/// com_err's message for `code`.
fn message_of(code: sys::errcode_t) -> String {
    let _guard = MESSAGE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: error_message returns a pointer to a static string, or to its static buffer for
    // unknown codes; the lock keeps other threads from rewriting that buffer until we copy it.
    let p = unsafe { sys::ldk_error_message(code) };
    if p.is_null() {
        return format!("error {code}");
    }
    // SAFETY: p is non-null and NUL-terminated (see above), and copied at once.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Turns an `errcode_t` into a `Result`.
pub(crate) fn check(call: &'static str, code: sys::errcode_t) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::new(call, code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_carries_library_message() {
        let e = Error::new(
            "ext2fs_new_range",
            sys::EXT2_ET_BLOCK_ALLOC_FAIL as sys::errcode_t,
        );
        assert!(e.is_no_space());
        assert_eq!(e.call(), "ext2fs_new_range");
        assert_eq!(e.code(), sys::EXT2_ET_BLOCK_ALLOC_FAIL as i64);
        let s = e.to_string();
        assert!(s.starts_with("ext2fs_new_range: "), "{s}");
        assert!(s.to_lowercase().contains("block"), "{s}");
        assert_eq!(s, format!("ext2fs_new_range: {}", e.message()));
    }

    #[test]
    fn unknown_codes_still_have_a_message() {
        let e = Error::new("ext2fs_x", 12345);
        assert!(!e.is_no_space());
        assert!(!e.message().is_empty());
        let einval = Error::invalid_argument("ext2fs_mkdir");
        assert!(
            einval.message().to_lowercase().contains("invalid argument"),
            "{}",
            einval.message()
        );
    }
}
