//! The leader's periodic sweep: silent clients go down, long-silent ones
//! leave the table, expired evaluation keys drop out.

use super::{ClientState, LicenseTable, SweepReport};

/// Heartbeats whose deadline has strictly passed `elapsed_ms` after the
/// client was last heard: at exactly three intervals the third one may still
/// be on its way, a millisecond later it is missed.
pub(super) fn missed(elapsed_ms: u64, interval_ms: u64) -> u64 {
    if elapsed_ms == 0 {
        0
    } else {
        (elapsed_ms - 1) / interval_ms.max(1)
    }
}

impl LicenseTable {
    /// Applies a sweep as of `now_ms`.
    pub(super) fn sweep(&mut self, now_ms: u64) -> SweepReport {
        let mut report = SweepReport::default();
        let config = &self.config;
        let derived = &mut self.derived;
        self.state.clients.retain(|id, client| {
            let elapsed = now_ms.saturating_sub(client.last_heard_ms);
            if elapsed > config.silence_remove_ms {
                derived.detach_client(config, client);
                report.removed.push(id.clone());
                return false;
            }
            let missed = u32::try_from(missed(elapsed, config.heartbeat_interval_ms)).unwrap_or(u32::MAX);
            let expired = client.keys.iter().filter(|k| k.is_expired(now_ms)).count();
            let goes_down = client.state == ClientState::Up && missed >= config.missed_heartbeats_down;
            if missed > client.stats.missed_in_a_row || expired > 0 || goes_down {
                derived.detach_client(config, client);
                if missed > client.stats.missed_in_a_row {
                    client.stats.missed_total += u64::from(missed - client.stats.missed_in_a_row);
                    client.stats.missed_in_a_row = missed;
                }
                if expired > 0 {
                    client.keys.retain(|k| !k.is_expired(now_ms));
                    report.expired_keys += u32::try_from(expired).unwrap_or(u32::MAX);
                }
                if goes_down {
                    // Its APs are gone with it: what it took goes back to the pool.
                    client.state = ClientState::Down;
                    client.used.clear();
                    report.down.push(id.clone());
                }
                derived.attach_client(config, client);
            }
            true
        });
        // Every certificate older than a floor has expired by now (the
        // CA issues none for longer): the floor has nothing left to refuse.
        let keep_s = u64::from(super::limits::MAX_SWITCH_CERT_DAYS) * 86_400;
        self.state
            .cert_floors
            .retain(|_, floor| floor.saturating_add(keep_s) >= now_ms / 1000);
        let expired_server: Vec<String> = self
            .state
            .server_keys
            .iter()
            .filter(|(_, sk)| sk.key.is_expired(now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for key_id in expired_server {
            if let Some(server_key) = self.state.server_keys.remove(&key_id) {
                self.derived.detach_server_key(&server_key);
                report.expired_keys += 1;
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::missed;

    #[test]
    fn missed_counts_only_deadlines_strictly_past() {
        assert_eq!(missed(0, 30_000), 0);
        assert_eq!(missed(30_000, 30_000), 0);
        assert_eq!(missed(30_001, 30_000), 1);
        assert_eq!(missed(90_000, 30_000), 2);
        assert_eq!(missed(90_001, 30_000), 3);
        assert_eq!(missed(5, 0), 4);
    }
}
