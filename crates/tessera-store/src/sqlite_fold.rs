//! `tessera_fold(text)`: the SCIM case-folding function ([`tessera_scim::criteria::fold`]) as a
//! SQLite SQL function, so case-insensitive filters on attributes held as JSON fold exactly as
//! the in-memory evaluator does. SQLite's own `lower()` folds ASCII only, and sqlx offers no safe
//! way to register a scalar function, hence this small piece of FFI (the same approach sqlx uses
//! for its `regexp` function).

use libsqlite3_sys as ffi;

const NAME: &[u8] = b"tessera_fold\0";

/// Registers the function on one connection. Returns SQLite's result code.
///
/// # Safety
/// `db` must be a live connection handle that no other thread uses during the call.
pub(crate) unsafe fn register(db: *mut ffi::sqlite3) -> i32 {
    // SAFETY: `db` is live and ours for the call (the caller's contract); the name is a static
    // NUL-terminated string; the function keeps no user data, so there is nothing to destroy.
    unsafe {
        ffi::sqlite3_create_function_v2(
            db,
            NAME.as_ptr().cast(),
            1,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC | ffi::SQLITE_INNOCUOUS,
            std::ptr::null_mut(),
            Some(fold),
            None,
            None,
            None,
        )
    }
}

unsafe extern "C" fn fold(
    ctx: *mut ffi::sqlite3_context,
    n_args: i32,
    args: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: SQLite calls this with `n_args` valid argument pointers (checked to be 1) and a
    // valid context; the text pointer is valid for `sqlite3_value_bytes` bytes until the next
    // call on that value, and SQLITE_TRANSIENT makes SQLite copy the result before we drop it.
    unsafe {
        if n_args != 1 {
            ffi::sqlite3_result_null(ctx);
            return;
        }
        let value = *args;
        if ffi::sqlite3_value_type(value) != ffi::SQLITE_TEXT {
            ffi::sqlite3_result_value(ctx, value);
            return;
        }
        let text = ffi::sqlite3_value_text(value);
        let len = ffi::sqlite3_value_bytes(value);
        if text.is_null() || len <= 0 {
            ffi::sqlite3_result_value(ctx, value);
            return;
        }
        let bytes = std::slice::from_raw_parts(text, len as usize);
        let folded = tessera_scim::criteria::fold(&String::from_utf8_lossy(bytes));
        ffi::sqlite3_result_text(
            ctx,
            folded.as_ptr().cast(),
            folded.len() as i32,
            ffi::SQLITE_TRANSIENT(),
        );
    }
}
