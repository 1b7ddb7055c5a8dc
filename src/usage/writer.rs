//! The usage log's file: lines appended, rotated by size
//! (`usage.jsonl` → `usage.jsonl.1` … `.N`, the oldest dropped), every file
//! readable by its owner only (0600: client ids and serials are an
//! inventory of the customer's network).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use cluster::ratelog::RateLimiter;

/// Appends lines to the log file and rotates it.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: BufWriter<File>,
    size: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Writer {
    /// Opens (or creates, 0600) `path` to append to it.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: PathBuf, max_bytes: u64, keep: u32) -> io::Result<Self> {
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes,
            keep,
            file: BufWriter::new(file),
            size,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends `line` and a newline; first rotates if the file would grow
    /// beyond `max_bytes` (a file holds at least one line, however long).
    ///
    /// # Errors
    /// Writing or rotating failed.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    /// Writes what is buffered to the file.
    ///
    /// # Errors
    /// Writing failed.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            match fs::remove_file(self.rotated(self.keep)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (1..self.keep).rev() {
                match fs::rename(self.rotated(n), self.rotated(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, self.rotated(1))?;
        }
        self.file = BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }

    /// Writes the lines `rx` brings until every sender is gone, flushing
    /// whenever none is waiting.
    pub fn run(mut self, rx: &Receiver<String>) {
        let log = RateLimiter::new(Duration::from_secs(60));
        let path = self.path.display().to_string();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(line) = next {
                if let Err(e) = self.write_line(&line) {
                    cluster::error_limited!(log, "usage log write", %path, error = %e, "usage log: line lost");
                }
                next = rx.try_recv().ok();
            }
            if let Err(e) = self.flush() {
                cluster::error_limited!(log, "usage log flush", %path, error = %e, "usage log: lines lost");
            }
        }
    }
}
