//! Log lines at a bounded rate. A flood of bad tokens or of failed accepts must not become a
//! flood of log lines (disk, log shipping, an operator's terminal): each kind of line is
//! written at most a few times per second, and the next line written says how many were
//! left out.

use std::sync::Mutex;

use tokio::time::Instant;

/// One kind of log line.
#[derive(Debug)]
pub(crate) struct Throttle {
    per_second: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
}

impl Throttle {
    /// At most `per_second` lines a second.
    pub fn new(per_second: u32) -> Throttle {
        Throttle {
            per_second,
            window: Mutex::new(Window {
                start: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)`: write this line, and say that `n` lines were left out before it. `None`:
    /// leave it out.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(window.start).as_secs() >= 1 {
            window.start = now;
            window.written = 0;
        }
        if window.written >= self.per_second {
            window.suppressed += 1;
            return None;
        }
        window.written += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_few_lines_a_second_then_a_count() {
        let throttle = Throttle::new(2);
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!(throttle.allow(), Some(2));
        assert_eq!(throttle.allow(), Some(0));
    }
}
