//! Notify hooks, as keepalived's `notify_master`, `notify_backup`,
//! `notify_fault` and `notify_stop`: an operator's script per state change
//! (`[notify]`), run with the state as arguments and environment.
//!
//! The node never waits for a script: [`Notifier::notify`] only queues a
//! run. Each script has its own task that runs its queue one at a time, in
//! order, each run killed (with its whole process group) after the
//! timeout. The queue is bounded: when it is full the oldest pending run is
//! dropped (a later state supersedes it) and counted. What a script prints
//! is logged at debug level, truncated.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::config::NotifySection;

/// Runs waiting per script, beyond which the oldest is dropped.
pub(crate) const QUEUE: usize = 8;
/// What is kept of a script's stdout and of its stderr for the log.
const OUTPUT_CAP: usize = 2048;
/// How long output is still read once the script ended: a process it left
/// in the background may hold the pipe open.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// A state change a script is run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Became VRRP master.
    Master,
    /// Became VRRP backup.
    Backup,
    /// A tracker without a weight failed (the VIP is given up), or the
    /// node stopped on a failure.
    Fault,
    /// Started answering license requests.
    Serving,
    /// Stopped answering them.
    Stopped,
}

impl Event {
    const ALL: [Event; 5] = [
        Event::Master,
        Event::Backup,
        Event::Fault,
        Event::Serving,
        Event::Stopped,
    ];

    /// The state as the script receives it (keepalived's spelling).
    pub(crate) fn state(self) -> &'static str {
        match self {
            Event::Master => "MASTER",
            Event::Backup => "BACKUP",
            Event::Fault => "FAULT",
            Event::Serving => "SERVING",
            Event::Stopped => "STOPPED",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn script(self, section: &NotifySection) -> Option<&PathBuf> {
        match self {
            Event::Master => section.master.as_ref(),
            Event::Backup => section.backup.as_ref(),
            Event::Fault => section.fault.as_ref(),
            Event::Serving => section.serving.as_ref(),
            Event::Stopped => section.stopped.as_ref(),
        }
    }
}

/// One run to do.
#[derive(Debug, Clone)]
struct Job {
    event: Event,
    priority: Option<u8>,
    reason: Option<String>,
}

/// One script's queue, shared by the node and the script's task.
struct Hook {
    script: PathBuf,
    queue: Mutex<VecDeque<Job>>,
    wake: Notify,
    /// Runs dropped because the queue was full.
    dropped: AtomicU64,
    /// Runs killed at the timeout.
    killed: AtomicU64,
}

/// The node's notify hooks (cheap to clone).
#[derive(Clone)]
pub(crate) struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    vip: String,
    timeout: Duration,
    hooks: [Option<Arc<Hook>>; 5],
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closing: tokio_util::sync::CancellationToken,
    log: Arc<cluster::ratelog::RateLimiter>,
}

impl Notifier {
    /// Starts a task per configured script (needs a tokio runtime).
    pub(crate) fn start(section: &NotifySection, node: &str, vip: &str) -> Notifier {
        let hooks = Event::ALL.map(|e| {
            e.script(section).map(|script| {
                Arc::new(Hook {
                    script: script.clone(),
                    queue: Mutex::new(VecDeque::new()),
                    wake: Notify::new(),
                    dropped: AtomicU64::new(0),
                    killed: AtomicU64::new(0),
                })
            })
        });
        let inner = Arc::new(Inner {
            node: node.to_owned(),
            vip: vip.to_owned(),
            timeout: Duration::from_millis(section.timeout_ms),
            hooks,
            tasks: Mutex::new(Vec::new()),
            closing: tokio_util::sync::CancellationToken::new(),
            log: Arc::new(cluster::ratelog::RateLimiter::new(Duration::from_secs(60))),
        });
        let tasks = inner
            .hooks
            .iter()
            .flatten()
            .map(|hook| tokio::spawn(work(Arc::clone(&inner), Arc::clone(hook))))
            .collect();
        *inner.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Notifier { inner }
    }

    /// Queues a run of `event`'s script, if there is one; never waits.
    pub(crate) fn notify(&self, event: Event, priority: Option<u8>, reason: Option<&str>) {
        let Some(hook) = &self.inner.hooks[event.index()] else {
            return;
        };
        let job = Job {
            event,
            priority,
            reason: reason.map(str::to_owned),
        };
        let dropped = {
            let mut q = hook.queue.lock().unwrap_or_else(|p| p.into_inner());
            let dropped = if q.len() >= QUEUE { q.pop_front() } else { None };
            q.push_back(job);
            dropped
        };
        if let Some(old) = dropped {
            let total = hook.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            cluster::warn_limited!(
                self.inner.log,
                "notify queue full",
                script = %hook.script.display(),
                dropped = old.event.state(),
                total,
                "notify script: runs are waiting behind a slow script; dropped the oldest"
            );
        }
        hook.wake.notify_one();
    }

    /// Runs dropped (queue full) and killed (timeout), over every script.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn counts(&self) -> (u64, u64) {
        self.inner.hooks.iter().flatten().fold((0, 0), |(d, k), h| {
            (
                d + h.dropped.load(Ordering::Relaxed),
                k + h.killed.load(Ordering::Relaxed),
            )
        })
    }

    /// Lets the queued runs finish, up to `wait`, then stops the tasks
    /// (a run still going is killed): for a stopping node, whose last
    /// changes (STOPPED, FAULT) the scripts should still see.
    pub(crate) async fn finish(&self, wait: Duration) {
        self.inner.closing.cancel();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = tokio::time::Instant::now() + wait;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// One script's task: runs its queue in order until the notifier closes
/// and the queue is empty.
async fn work(inner: Arc<Inner>, hook: Arc<Hook>) {
    loop {
        let job = hook.queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        match job {
            Some(job) => run_once(&inner, &hook, &job).await,
            None if inner.closing.is_cancelled() => return,
            None => {
                tokio::select! {
                    () = hook.wake.notified() => {}
                    () = inner.closing.cancelled() => {}
                }
            }
        }
    }
}

/// How one run ended.
#[derive(Debug)]
enum Outcome {
    Exited(std::process::ExitStatus),
    Killed,
}

/// Runs the script once and logs how it went.
async fn run_once(inner: &Inner, hook: &Hook, job: &Job) {
    let state = job.event.state();
    let started = Instant::now();
    match run(inner, &hook.script, job).await {
        Ok((outcome, stdout, stderr)) => {
            let ms = started.elapsed().as_millis() as u64;
            match outcome {
                Outcome::Exited(status) if status.success() => {
                    debug!(script = %hook.script.display(), state, ms, "notify script ran")
                }
                Outcome::Exited(status) => cluster::warn_limited!(
                    inner.log,
                    "notify script failed",
                    script = %hook.script.display(),
                    state,
                    %status,
                    "notify script failed"
                ),
                Outcome::Killed => {
                    hook.killed.fetch_add(1, Ordering::Relaxed);
                    cluster::warn_limited!(
                        inner.log,
                        "notify script timeout",
                        script = %hook.script.display(),
                        state,
                        timeout_ms = inner.timeout.as_millis() as u64,
                        "notify script still running at notify.timeout_ms: killed it (and its process group)"
                    );
                }
            }
            if !stdout.is_empty() || !stderr.is_empty() {
                debug!(script = %hook.script.display(), state, %stdout, %stderr, "notify script output");
            }
        }
        Err(e) => cluster::warn_limited!(
            inner.log,
            "notify script spawn",
            script = %hook.script.display(),
            state,
            error = %e,
            "cannot run the notify script: check that it exists and is executable (`vipool check-config`)"
        ),
    }
}

/// Spawns the script, waits for it up to the timeout (then kills its
/// process group), and collects what it printed.
async fn run(inner: &Inner, script: &Path, job: &Job) -> std::io::Result<(Outcome, String, String)> {
    let mut cmd = Command::new(script);
    cmd.args(["vipool", job.event.state(), &inner.node, &inner.vip])
        .env("VIPOOL_STATE", job.event.state())
        .env("VIPOOL_NODE", &inner.node)
        .env("VIPOOL_VIP", &inner.vip)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(p) = job.priority {
        cmd.env("VIPOOL_PRIORITY", p.to_string());
    }
    if let Some(r) = &job.reason {
        cmd.env("VIPOOL_REASON", r);
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().map(|s| tokio::spawn(capped(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(capped(s)));
    let outcome = match tokio::time::timeout(inner.timeout, child.wait()).await {
        Ok(status) => Outcome::Exited(status?),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
            let _ = child.kill().await;
            Outcome::Killed
        }
    };
    Ok((outcome, output(stdout).await, output(stderr).await))
}

/// What a task reading a pipe got, within [`OUTPUT_GRACE`].
async fn output(task: Option<JoinHandle<String>>) -> String {
    let Some(mut task) = task else {
        return String::new();
    };
    match tokio::time::timeout(OUTPUT_GRACE, &mut task).await {
        Ok(Ok(s)) => s,
        _ => {
            task.abort();
            String::new()
        }
    }
}

/// Reads a pipe to its end, keeping the first [`OUTPUT_CAP`] bytes (the
/// rest is read and thrown away, so that the script never blocks on a full pipe).
async fn capped(mut pipe: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 1024];
    let mut more = false;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                more |= n > room;
            }
        }
    }
    let mut s = String::from_utf8_lossy(&kept).trim_end().to_owned();
    if more {
        s.push_str(" [truncated]");
    }
    s
}

/// Logs the configured scripts at start.
pub(crate) fn announce(section: &NotifySection) {
    for (key, path) in section.scripts() {
        info!(hook = key, script = %path.display(), timeout_ms = section.timeout_ms, "notify script configured");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Waits until `path` has `lines` lines (or 10 s pass) and returns them.
    async fn lines(path: &Path, lines: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let got: Vec<String> = text.lines().map(str::to_owned).collect();
            if got.len() >= lines || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn section(timeout_ms: u64) -> NotifySection {
        NotifySection {
            timeout_ms,
            ..NotifySection::default()
        }
    }

    #[tokio::test]
    async fn a_script_receives_the_state_as_arguments_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = script(
            dir.path(),
            "record.sh",
            &format!(
                "echo \"$# $1 $2 $3 $4|$VIPOOL_STATE|$VIPOOL_NODE|$VIPOOL_VIP|$VIPOOL_PRIORITY|$VIPOOL_REASON\" >> {}",
                out.display()
            ),
        );
        let mut sec = section(5000);
        sec.master = Some(s.clone());
        sec.stopped = Some(s);
        let n = Notifier::start(&sec, "backup", "192.0.2.100");
        n.notify(Event::Master, Some(100), Some("MasterDown"));
        n.notify(Event::Backup, Some(100), None); // no script: nothing runs
        n.notify(Event::Stopped, None, None);
        // The two scripts run independently; wait for both.
        let got = lines(&out, 2).await;
        n.finish(Duration::from_secs(5)).await;
        let mut got = got;
        got.sort();
        assert_eq!(
            got,
            vec![
                "4 vipool MASTER backup 192.0.2.100|MASTER|backup|192.0.2.100|100|MasterDown",
                "4 vipool STOPPED backup 192.0.2.100|STOPPED|backup|192.0.2.100||",
            ]
        );
        assert_eq!(n.counts(), (0, 0));
    }

    #[tokio::test]
    async fn a_script_past_its_timeout_is_killed_and_the_next_run_still_happens() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // The first run hangs (in a child process, as a real script's
        // command would); the next records that it ran.
        let s = script(
            dir.path(),
            "slow.sh",
            &format!(
                "echo \"start $VIPOOL_REASON\" >> {out}\nif [ \"$VIPOOL_REASON\" = hang ]; then sleep 30; fi\necho \"end $VIPOOL_REASON\" >> {out}",
                out = out.display()
            ),
        );
        let mut sec = section(300);
        sec.master = Some(s);
        let n = Notifier::start(&sec, "primary", "192.0.2.100");
        let t0 = Instant::now();
        n.notify(Event::Master, None, Some("hang"));
        n.notify(Event::Master, None, Some("quick"));
        let got = lines(&out, 3).await;
        let elapsed = t0.elapsed();
        assert_eq!(got, vec!["start hang", "start quick", "end quick"]);
        // Killed at the timeout, not after its 30 s sleep.
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        assert_eq!(n.counts(), (0, 1));
        n.finish(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_missing_script_is_logged_not_a_panic_and_the_queue_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let good = script(
            dir.path(),
            "good.sh",
            &format!("echo \"$VIPOOL_STATE\" >> {}", out.display()),
        );
        let mut sec = section(5000);
        sec.master = Some(dir.path().join("no-such-script"));
        sec.backup = Some(good);
        let n = Notifier::start(&sec, "primary", "192.0.2.100");
        let err = run(
            &n.inner,
            &dir.path().join("no-such-script"),
            &Job {
                event: Event::Master,
                priority: None,
                reason: None,
            },
        )
        .await;
        assert!(err.is_err());
        n.notify(Event::Master, None, None);
        n.notify(Event::Master, None, None);
        n.notify(Event::Backup, None, None);
        assert_eq!(lines(&out, 1).await, vec!["BACKUP"]);
        n.finish(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_pending_run_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let gate = dir.path().join("gate");
        // Each run waits for the gate file, so that the queue fills up.
        let s = script(
            dir.path(),
            "gated.sh",
            &format!(
                "while [ ! -e {gate} ]; do sleep 0.02; done\necho \"$VIPOOL_REASON\" >> {out}",
                gate = gate.display(),
                out = out.display()
            ),
        );
        let mut sec = section(10_000);
        sec.master = Some(s);
        let n = Notifier::start(&sec, "primary", "192.0.2.100");
        n.notify(Event::Master, None, Some("0"));
        // Run 0 is taken by the task: wait until it has started.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !n.inner.hooks[0]
            .as_ref()
            .unwrap()
            .queue
            .lock()
            .unwrap()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "the first run never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 1..=QUEUE + 2 {
            n.notify(Event::Master, None, Some(&i.to_string()));
        }
        assert_eq!(n.counts(), (2, 0));
        std::fs::write(&gate, "").unwrap();
        let got = lines(&out, QUEUE + 1).await;
        let want: Vec<String> = std::iter::once(0)
            .chain(3..=QUEUE + 2)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(got, want);
        n.finish(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn output_is_captured_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(
            dir.path(),
            "loud.sh",
            "head -c 100000 /dev/zero | tr '\\0' x; echo oops >&2",
        );
        let mut sec = section(5000);
        sec.master = Some(s.clone());
        let n = Notifier::start(&sec, "primary", "192.0.2.100");
        let (outcome, stdout, stderr) = run(
            &n.inner,
            &s,
            &Job {
                event: Event::Master,
                priority: None,
                reason: None,
            },
        )
        .await
        .unwrap();
        assert!(
            matches!(outcome, Outcome::Exited(s) if s.success()),
            "{outcome:?}"
        );
        assert_eq!(stdout, format!("{} [truncated]", "x".repeat(OUTPUT_CAP)));
        assert_eq!(stderr, "oops");
        n.finish(Duration::from_secs(1)).await;
    }
}
