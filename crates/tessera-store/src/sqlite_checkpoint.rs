//! WAL checkpoints on SQLite, mostly off the write path.
//!
//! By default SQLite checkpoints inside the commit that takes the WAL past 1,000 pages: that
//! writer copies the pages into the database file and fsyncs it while every other writer of
//! this process waits behind it. Here a background thread of lower scheduling priority runs a
//! PASSIVE checkpoint (which never blocks readers or writers) every [`INTERVAL`], so copying
//! pages yields to serving requests. Under continuous writes it never copies the last pages
//! (new ones keep arriving), so the WAL could never restart from its beginning: the writer
//! connection still checkpoints, less often, and then has little left to copy (see
//! `WAL_LIMITS` in `sqlite_writer`).

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How often the WAL is copied back into the database file.
const INTERVAL: Duration = Duration::from_millis(200);

/// The checkpointer runs while this lives (the database handle owns it); it stops within one
/// [`INTERVAL`] once every clone of the handle is gone.
pub(crate) struct Checkpointer {
    _alive: Arc<()>,
}

impl Checkpointer {
    pub fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let alive = Arc::new(());
        let watch = Arc::downgrade(&alive);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&path, &watch))?;
        Ok(Checkpointer { _alive: alive })
    }
}

fn run(path: &Path, alive: &Weak<()>) {
    lower_priority();
    let conn = match open(path) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the WAL checkpoint connection; only the writer's own checkpoints (every 4,096 pages) remain");
            return;
        }
    };
    while alive.upgrade().is_some() {
        std::thread::sleep(INTERVAL);
        // A checkpoint of a WAL with nothing new to copy returns at once.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL;")?;
    Ok(conn)
}

/// Background work should not take the core from request handling: nice 10 for this thread
/// only (on Linux, `setpriority` with the thread's id applies to that thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
