//! raft-rs logs through slog; this drain forwards every record to `tracing`
//! so the member's raft chatter lands in the daemon's one log.

use std::fmt::{self, Write as _};

/// A slog drain that re-emits records as tracing events with target `raft`.
struct TracingDrain;

/// Collects a record's key-value pairs as ` k=v` text.
struct Kv(String);

impl slog::Serializer for Kv {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = Kv(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Debug => tracing::debug!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}{}", kv.0),
        }
        Ok(())
    }
}

/// The logger handed to raft-rs for member `id`.
pub(crate) fn raft_logger(id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_id" => id))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    /// A tracing writer that keeps what it is given, for tests that check logs.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }

        /// A subscriber that writes into this buffer.
        pub(crate) fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
            let me = self.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || me.clone())
                .finish()
        }

        /// Runs `f` with [`Captured::subscriber`] as the default.
        pub(crate) fn during<R>(&self, f: impl FnOnce() -> R) -> R {
            ask_every_time();
            tracing::subscriber::with_default(self.subscriber(), f)
        }
    }

    /// tracing caches, per callsite, whether any subscriber wants its
    /// events. A test thread without a subscriber that reaches a callsite
    /// first caches "never" and can overwrite the "sometimes" a capturing
    /// test's subscriber has just set: that test then misses the event. A
    /// global subscriber that is interested in every callsite, and records
    /// nothing, keeps the cache at "sometimes" for all threads.
    fn ask_every_time() {
        struct AskEveryTime;
        impl tracing::Subscriber for AskEveryTime {
            fn register_callsite(&self, _: &tracing::Metadata<'_>) -> tracing::subscriber::Interest {
                tracing::subscriber::Interest::sometimes()
            }
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                false
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, _: &tracing::Event<'_>) {}
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Another test binary's harness may have set one: then it decides.
            let _ = tracing::subscriber::set_global_default(AskEveryTime);
        });
    }

    #[test]
    fn slog_records_arrive_in_tracing_with_their_fields() {
        let cap = Captured::default();
        cap.during(|| {
            let log = super::raft_logger(7);
            slog::warn!(log, "became leader"; "term" => 3);
            slog::debug!(log, "quiet detail");
        });
        let text = cap.text();
        assert!(
            text.contains("WARN raft: became leader term=3 raft_id=7"),
            "{text}"
        );
        assert!(text.contains("DEBUG raft: quiet detail raft_id=7"), "{text}");
    }
}
