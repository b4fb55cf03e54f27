//! A VFS for the writer's connection that writes each commit's log frames
//! to the write-ahead log in one system call.
//!
//! SQLite writes a frame as two `pwrite`s, its 24-byte header and then its
//! page, so a commit of 40 pages costs 80 system calls, each touching one
//! or two pages of the kernel's page cache: about a tenth of the relay's
//! CPU at 4 × 64 went to them. This VFS is SQLite's own (`unix`) with one
//! change: writes that append to a write-ahead log are gathered in memory,
//! and written in one `pwrite` per 124 KiB as soon as a commit frame is
//! complete (its header says so), or before anything else touches the log
//! (a read, a sync, a size, a truncation, a file control, closing it, a
//! write elsewhere in it). A write below what was appended goes to the
//! file at once: SQLite rewrites a frame when a transaction changes a page
//! it had spilled to the log, and then, after the commit frame, the
//! headers of the frames from there on. So when COMMIT returns, the frames
//! are in the file as they would be without this VFS, before the commit is
//! visible to any reader (SQLite publishes a commit in the shared index
//! after writing its frames), and an error writing them fails the commit
//! as it would have failed the write. Every other file, and every other
//! call, goes to `unix` unchanged.
//!
//! That a commit frame's page is the write after its header, and the
//! rewrites, are how the bundled SQLite writes its log; the tests check
//! that the frames are in the file when COMMIT returns, and that a copy of
//! the files taken then (a crash) recovers the transaction, so an upgrade
//! that changed either would fail them.
//!
//! Only the writer's connection opens the database through this VFS
//! ([`NAME`]); readers use the default one. Both share the `unix` VFS's
//! locks, since the files underneath are `unix` files.

use rusqlite::ffi;
use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

/// The name the writer's connection opens the database with.
pub const NAME: &str = "clawrelay-wal";
const NAME_C: &CStr = c"clawrelay-wal";

/// A log frame's header: a non-zero database size at bytes 4..8 marks the
/// frame that commits.
const FRAME_HEADER: usize = 24;
/// Gathered bytes past this are written at once (a commit larger than it,
/// or frames spilled from the cache mid-transaction).
const MAX_GATHERED: usize = 4 << 20;

/// The memory kept for gathering between commits (a commit of 4 × 64 is
/// about 150 KiB).
const KEPT_CAPACITY: usize = 1 << 20;
/// The most `unix` writes in one call (it masks a length with 0x1ffff).
const MAX_WRITE: usize = 31 * 4096;

/// An open file: SQLite's header, then the `unix` file it wraps (in the
/// same allocation, past this struct).
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// For a write-ahead log, the frames not yet written; else null.
    gathered: *mut Gathered,
}

struct Gathered {
    /// Where `bytes` go in the file.
    offset: i64,
    bytes: Vec<u8>,
    /// The end of what was appended to the log since it last started from
    /// its beginning (gathered or written): a write below it changes a
    /// frame written before (SQLite rewrites frames, and their headers
    /// after the commit frame, when a transaction changed a page it had
    /// already spilled to the log), and goes to the file at once.
    appended: i64,
    /// The last write was a commit frame's header: its page completes it.
    commit_next: bool,
}

/// The wrapped file's size, rounded so the `unix` file stays aligned.
const HEAD: usize = std::mem::size_of::<File>().next_multiple_of(16);

/// Registers the VFS (once; not as the default). Fails when SQLite has no
/// `unix` VFS.
pub fn register() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| unsafe {
        let real = ffi::sqlite3_vfs_find(c"unix".as_ptr());
        if real.is_null() {
            return Err("SQLite has no `unix` VFS".into());
        }
        let r = &*real;
        let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
            iVersion: r.iVersion,
            szOsFile: (HEAD + r.szOsFile as usize) as c_int,
            mxPathname: r.mxPathname,
            pNext: std::ptr::null_mut(),
            zName: NAME_C.as_ptr(),
            pAppData: real.cast(),
            xOpen: Some(open),
            // `unix` does not look at the VFS it is called through for
            // these, past `mxPathname` (copied above).
            xDelete: r.xDelete,
            xAccess: r.xAccess,
            xFullPathname: r.xFullPathname,
            xDlOpen: r.xDlOpen,
            xDlError: r.xDlError,
            xDlSym: r.xDlSym,
            xDlClose: r.xDlClose,
            xRandomness: r.xRandomness,
            xSleep: r.xSleep,
            xCurrentTime: r.xCurrentTime,
            xGetLastError: r.xGetLastError,
            xCurrentTimeInt64: r.xCurrentTimeInt64,
            xSetSystemCall: r.xSetSystemCall,
            xGetSystemCall: r.xGetSystemCall,
            xNextSystemCall: r.xNextSystemCall,
        }));
        match ffi::sqlite3_vfs_register(vfs, 0) {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(format!(
                "registering the writer's VFS failed (SQLite code {rc})"
            )),
        }
    })
    .clone()
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = (*vfs).pAppData as *mut ffi::sqlite3_vfs;
    let f = file as *mut File;
    let real = (file as *mut u8).add(HEAD) as *mut ffi::sqlite3_file;
    (*f).base.pMethods = std::ptr::null();
    (*f).real = real;
    (*f).gathered = std::ptr::null_mut();
    let Some(real_open) = (*real_vfs).xOpen else {
        return ffi::SQLITE_CANTOPEN;
    };
    let rc = real_open(real_vfs, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        // SQLite does not close a file whose open failed (methods null).
        return rc;
    }
    if flags & ffi::SQLITE_OPEN_WAL != 0 {
        (*f).gathered = Box::into_raw(Box::new(Gathered {
            offset: 0,
            bytes: Vec::new(),
            appended: 0,
            commit_next: false,
        }));
    }
    (*f).base.pMethods = &METHODS;
    ffi::SQLITE_OK
}

/// The wrapped file and its methods.
unsafe fn real(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    let real = (*(file as *mut File)).real;
    (real, &*(*real).pMethods)
}

/// Writes what was gathered, if anything.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    let g = (*(file as *mut File)).gathered;
    if g.is_null() || (*g).bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let g = &mut *g;
    let (real, m) = real(file);
    let Some(write) = m.xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut rc = ffi::SQLITE_OK;
    let mut offset = g.offset;
    for chunk in g.bytes.chunks(MAX_WRITE) {
        rc = write(real, chunk.as_ptr().cast(), chunk.len() as c_int, offset);
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += chunk.len() as i64;
    }
    g.bytes.clear();
    // A large transaction's frames are not held on to.
    g.bytes.shrink_to(KEPT_CAPACITY);
    g.commit_next = false;
    rc
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let g = (*(file as *mut File)).gathered;
    if g.is_null() {
        let (real, m) = real(file);
        return m
            .xWrite
            .map_or(ffi::SQLITE_IOERR_WRITE, |w| w(real, data, amount, offset));
    }
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), amount as usize);
    // The log's header at its start: SQLite starts it over.
    if offset == 0 {
        (*g).appended = 0;
    }
    let rewrite = offset < (*g).appended;
    if !(*g).bytes.is_empty() && (rewrite || offset != (*g).offset + (*g).bytes.len() as i64) {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    let g = &mut *g;
    g.appended = g.appended.max(offset + i64::from(amount));
    if rewrite {
        let (real, m) = real(file);
        return m
            .xWrite
            .map_or(ffi::SQLITE_IOERR_WRITE, |w| w(real, data, amount, offset));
    }
    if g.bytes.is_empty() {
        g.offset = offset;
    }
    g.bytes.extend_from_slice(bytes);
    let completes_commit = std::mem::take(&mut g.commit_next);
    if bytes.len() == FRAME_HEADER && bytes[4..8] != [0, 0, 0, 0] {
        g.commit_next = true;
    }
    if completes_commit || g.bytes.len() >= MAX_GATHERED {
        return flush(file);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let flushed = flush(file);
    let f = file as *mut File;
    if !(*f).gathered.is_null() {
        drop(Box::from_raw((*f).gathered));
        (*f).gathered = std::ptr::null_mut();
    }
    let (real, m) = real(file);
    let rc = m.xClose.map_or(ffi::SQLITE_OK, |c| c(real));
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        rc
    }
}

/// Writes what was gathered, then calls the wrapped file (`call`): for
/// every method that touches the log other than an append.
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
    call: impl FnOnce(*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    let rc = flush(file);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    let (real, m) = real(file);
    call(real, m)
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    flushed(file, |real, m| {
        m.xRead
            .map_or(ffi::SQLITE_IOERR_READ, |r| r(real, data, amount, offset))
    })
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed(file, |real, m| {
        m.xTruncate
            .map_or(ffi::SQLITE_IOERR_TRUNCATE, |t| t(real, size))
    })
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed(file, |real, m| {
        m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |s| s(real, flags))
    })
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed(file, |real, m| {
        m.xFileSize
            .map_or(ffi::SQLITE_IOERR_FSTAT, |s| s(real, size))
    })
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    flushed(file, |real, m| {
        m.xFileControl
            .map_or(ffi::SQLITE_NOTFOUND, |fc| fc(real, op, arg))
    })
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (real, m) = real(file);
    m.xLock.map_or(ffi::SQLITE_IOERR_LOCK, |l| l(real, level))
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (real, m) = real(file);
    m.xUnlock
        .map_or(ffi::SQLITE_IOERR_UNLOCK, |u| u(real, level))
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let (real, m) = real(file);
    m.xCheckReservedLock
        .map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |c| c(real, out))
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, m) = real(file);
    m.xSectorSize.map_or(4096, |s| s(real))
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, m) = real(file);
    m.xDeviceCharacteristics.map_or(0, |d| d(real))
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let (real, m) = real(file);
    m.xShmMap.map_or(ffi::SQLITE_IOERR_SHMMAP, |s| {
        s(real, page, size, extend, out)
    })
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let (real, m) = real(file);
    m.xShmLock
        .map_or(ffi::SQLITE_IOERR_SHMLOCK, |s| s(real, offset, n, flags))
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    let (real, m) = real(file);
    if let Some(b) = m.xShmBarrier {
        b(real);
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let (real, m) = real(file);
    m.xShmUnmap.map_or(ffi::SQLITE_OK, |u| u(real, delete))
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    flushed(file, |real, m| match m.xFetch {
        Some(f) => f(real, offset, amount, out),
        None => {
            *out = std::ptr::null_mut();
            ffi::SQLITE_OK
        }
    })
}

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    let (real, m) = real(file);
    m.xUnfetch.map_or(ffi::SQLITE_OK, |u| u(real, offset, page))
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};
    use std::path::Path;

    fn writer(path: &Path) -> Connection {
        register().expect("register");
        let w = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            NAME,
        )
        .expect("open");
        let mode: String = w
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("wal");
        assert_eq!(mode, "wal");
        w.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, s TEXT);",
        )
        .expect("setup");
        w
    }

    fn insert(w: &Connection, from: i64, to: i64) {
        let mut st = w
            .prepare_cached("INSERT INTO t VALUES (?1, ?2)")
            .expect("prepare");
        for n in from..to {
            st.execute((n, format!("{n:0300}"))).expect("insert");
        }
    }

    /// What a plain connection (the default VFS, as the relay's readers)
    /// sees: the rows, and whether the file is sound.
    fn seen(path: &Path) -> (i64, String) {
        let r = Connection::open(path).expect("reader");
        let n = r
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        let ok = r
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        (n, ok)
    }

    /// What a crash now would leave: the database and its log copied as
    /// they are (the writer still open) to `<name>.db` beside them.
    fn crash(path: &Path, name: &str) -> std::path::PathBuf {
        let log = |p: &Path| {
            let mut log = p.as_os_str().to_owned();
            log.push("-wal");
            std::path::PathBuf::from(log)
        };
        let copy = path.with_file_name(format!("{name}.db"));
        std::fs::copy(path, &copy).expect("copy the file");
        std::fs::copy(log(path), log(&copy)).expect("copy the log");
        copy
    }

    /// The log's frames of its current generation: (page, commit size).
    fn frames(wal: &Path) -> Vec<(u32, u32)> {
        let bytes = std::fs::read(wal).expect("read the log");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let page = be(&bytes[8..12]) as usize;
        let salts = &bytes[16..24];
        let mut out = Vec::new();
        let mut at = 32;
        while at + 24 + page <= bytes.len() && &bytes[at + 8..at + 16] == salts {
            out.push((be(&bytes[at..at + 4]), be(&bytes[at + 4..at + 8])));
            at += 24 + page;
        }
        out
    }

    #[test]
    fn when_commit_returns_its_frames_are_in_the_file_and_readers_see_them() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.db");
        let w = writer(&path);
        // Small and large commits: one frame, and many times `MAX_WRITE`.
        for (from, to) in [(0, 1), (1, 2000), (2000, 2010)] {
            w.execute_batch("BEGIN").expect("begin");
            insert(&w, from, to);
            w.execute_batch("COMMIT").expect("commit");
            // Read from the file as another process would, with the
            // writer's connection still open and nothing flushed since.
            let f = frames(&dir.path().join("t.db-wal"));
            assert_ne!(f.last().map(|l| l.1), Some(0), "the last frame commits");
            assert_eq!(seen(&path), (to, "ok".to_owned()));
            // And a crash now keeps it.
            let crashed = crash(&path, &format!("crashed-{to}"));
            assert_eq!(seen(&crashed), (to, "ok".to_owned()));
        }
    }

    /// The transaction spills pages to the log and changes them again, so
    /// SQLite rewrites its frames, and their headers after the commit frame.
    #[test]
    fn a_transaction_spilled_to_the_log_commits_or_rolls_back_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.db");
        let w = writer(&path);
        // A cache of 8 pages: a large transaction writes frames to the
        // log before its commit, and reads some back.
        w.execute_batch("PRAGMA cache_size = 8").expect("cache");
        w.execute_batch("BEGIN").expect("begin");
        insert(&w, 0, 3000);
        w.execute_batch("ROLLBACK").expect("rollback");
        assert_eq!(seen(&path), (0, "ok".to_owned()));
        w.execute_batch("BEGIN").expect("begin");
        insert(&w, 0, 3000);
        w.execute_batch("UPDATE t SET s = 'changed' WHERE n % 7 = 0")
            .expect("update");
        w.execute_batch("COMMIT").expect("commit");
        assert_eq!(seen(&path), (3000, "ok".to_owned()));
        // A crash right after COMMIT returned: the files as they are then,
        // recovered by a fresh connection, hold the transaction.
        assert_eq!(seen(&crash(&path, "crashed")), (3000, "ok".to_owned()));
        let changed: i64 = Connection::open(&path)
            .expect("reader")
            .query_row("SELECT count(*) FROM t WHERE s = 'changed'", [], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(changed, 429);
    }

    #[test]
    fn the_log_restarts_and_the_file_survives_the_writer_closing() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.db");
        let w = writer(&path);
        for round in 0..5 {
            w.execute_batch("BEGIN").expect("begin");
            insert(&w, round * 500, round * 500 + 500);
            w.execute_batch("COMMIT").expect("commit");
            // Back to the log's start: the next commit writes at offset 0.
            let done: i64 = w
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0))
                .expect("checkpoint");
            assert_eq!(done, 0);
        }
        drop(w);
        assert_eq!(seen(&path), (2500, "ok".to_owned()));
    }
}
