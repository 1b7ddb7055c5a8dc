//! The timers of one instance: a kind per RFC timer over a small table of
//! deadlines, in the shape of quinn-proto's `TimerTable`.

use std::time::Instant;

/// The timers an [`super::Instance`] runs (RFC 9568 §6.2 "Timers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Adver_Timer: a master sends its next advertisement.
    Adver,
    /// Master_Down_Timer: a backup declares the master gone.
    MasterDown,
    /// A backup that outranks the master takes over after
    /// [`super::Config::preempt_delay`] (not in the RFC).
    Preempt,
    /// An advert held for the peer's next claim is discarded unconfirmed,
    /// one Advertisement_Interval after it arrived (not in the RFC; see
    /// [`super::Instance::set_peer_claim`]). Unlike the others it survives
    /// state changes: what happens to a held advert does not depend on them.
    Hold,
}

impl Timer {
    /// Every timer kind, in table order.
    pub const ALL: [Timer; 4] = [Timer::Adver, Timer::MasterDown, Timer::Preempt, Timer::Hold];

    /// The RFC's election timers, which every state change resets.
    pub(super) const ELECTION: [Timer; 3] = [Timer::Adver, Timer::MasterDown, Timer::Preempt];

    const fn index(self) -> usize {
        match self {
            Timer::Adver => 0,
            Timer::MasterDown => 1,
            Timer::Preempt => 2,
            Timer::Hold => 3,
        }
    }
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TimerTable {
    deadlines: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    /// Arms `timer` to fire at `at`, replacing any earlier deadline.
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer.index()] = Some(at);
    }

    /// The deadline of `timer`, if armed.
    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer.index()]
    }

    /// Whether `timer` is armed.
    pub(super) fn is_armed(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// Disarms `timer`.
    pub(super) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }

    /// Disarms every timer.
    pub(super) fn stop_all(&mut self) {
        self.deadlines = Default::default();
    }

    /// The earliest deadline of any armed timer.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the timer with the earliest deadline at or before
    /// `now`; ties go to table order. `None` when nothing has expired.
    pub(super) fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        let timer = Timer::ALL
            .into_iter()
            .filter_map(|t| self.get(t).filter(|&at| at <= now).map(|at| (at, t)))
            .min()?
            .1;
        self.stop(timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn earliest_first_and_spurious_is_none() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next_timeout(), None);
        assert_eq!(table.take_expired(t0), None);

        table.set(Timer::Preempt, t0 + Duration::from_secs(1));
        table.set(Timer::MasterDown, t0 + Duration::from_secs(2));
        assert_eq!(table.next_timeout(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(table.take_expired(t0), None);

        let later = t0 + Duration::from_secs(5);
        assert_eq!(table.take_expired(later), Some(Timer::Preempt));
        assert_eq!(table.take_expired(later), Some(Timer::MasterDown));
        assert_eq!(table.take_expired(later), None);
        assert_eq!(table.next_timeout(), None);
    }

    #[test]
    fn set_replaces_and_stop_disarms() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::Adver, t0 + Duration::from_secs(3));
        table.set(Timer::Adver, t0 + Duration::from_secs(1));
        assert_eq!(table.get(Timer::Adver), Some(t0 + Duration::from_secs(1)));
        assert!(table.is_armed(Timer::Adver));
        table.stop(Timer::Adver);
        assert!(!table.is_armed(Timer::Adver));
        table.set(Timer::MasterDown, t0);
        table.stop_all();
        assert_eq!(table, TimerTable::default());
    }
}
