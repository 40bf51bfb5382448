//! Retry, fallback and fail decisions for a failed request, as one pure function over
//! (failure, attempt) so every HTTP status and transport error has a tested answer.
//! The record task owns the clock and the randomness; this only decides.

use std::time::Duration;

use crate::config::RunConfig;
use crate::provider::Failure;

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the same request to the same model after this delay.
    Retry(Duration),
    /// Give up on this model; try the next candidate of the route.
    NextCandidate,
    /// The prompt does not fit: try the next candidate with a larger context window.
    NextLargerContext,
    /// The request itself is bad; no model will take it.
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries per model after the first attempt.
    pub max_retries: u32,
    /// First backoff delay; doubles each retry.
    pub base_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this moves to the next candidate instead of waiting.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// The policy `[run]` configures.
    pub fn new(run: &RunConfig) -> RetryPolicy {
        RetryPolicy {
            max_retries: run.max_retries,
            base_delay: Duration::from_millis(run.retry_base_ms),
            max_delay: Duration::from_millis(run.retry_max_delay_ms),
            max_retry_after: Duration::from_secs(run.max_retry_after_s),
        }
    }
}

/// True for failures worth retrying on the same model.
pub fn is_transient(f: &Failure) -> bool {
    match f {
        Failure::Http { status, .. } => matches!(status, 408 | 409 | 429 | 500..=599),
        Failure::Timeout | Failure::Connect | Failure::Reset | Failure::Malformed => true,
        Failure::Unusable => false,
    }
}

/// True for failures a provider answered (or its host gave) that will not go away by
/// themselves: a key refused, a model or URL it does not know, a host that cannot be
/// reached (after the retries). A run whose records fail this way in a row stops
/// early, and a resume sends them again. Not a provider that cannot be used at all
/// (`Unusable`, a key not set): the run's start already said which records that
/// costs, and chose to go on.
pub fn is_lasting(f: &Failure) -> bool {
    match f {
        Failure::Http { status, .. } => matches!(status, 401 | 403 | 404),
        Failure::Connect => true,
        Failure::Unusable | Failure::Timeout | Failure::Reset | Failure::Malformed => false,
    }
}

/// Decides after the `attempt`-th failed attempt (1-based) on one model. `jitter` in
/// [0, 1) spreads retries: the backoff is scaled into [50%, 100%] of its nominal value.
pub fn decide(f: &Failure, attempt: u32, p: &RetryPolicy, jitter: f64) -> Action {
    if let Failure::Http {
        status,
        context_length_exceeded,
        ..
    } = f
    {
        match status {
            400 if *context_length_exceeded => return Action::NextLargerContext,
            400 | 422 => return Action::Fail,
            401 | 403 | 404 => return Action::NextCandidate,
            _ if !is_transient(f) => return Action::NextCandidate,
            _ => {}
        }
    }
    if *f == Failure::Unusable || attempt > p.max_retries {
        return Action::NextCandidate;
    }
    let exp = p.base_delay.saturating_mul(1u32 << (attempt - 1).min(16));
    let backoff = exp
        .min(p.max_delay)
        .mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    match f {
        Failure::Http {
            retry_after: Some(wait),
            ..
        } if *wait > p.max_retry_after => Action::NextCandidate,
        Failure::Http {
            retry_after: Some(wait),
            ..
        } => Action::Retry((*wait).max(backoff)),
        _ => Action::Retry(backoff),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded default's `[run]`: 3 retries, 500 ms doubling to 30 s, Retry-After
    /// up to 120 s.
    fn default_policy() -> RetryPolicy {
        RetryPolicy::new(&crate::config::Config::embedded().run)
    }

    fn http(status: u16) -> Failure {
        Failure::Http {
            status,
            retry_after: None,
            context_length_exceeded: false,
        }
    }

    #[test]
    fn every_status_has_the_documented_answer() {
        let p = default_policy();
        for status in 100..=599u16 {
            let got = decide(&http(status), 1, &p, 0.0);
            let want = match status {
                408 | 409 | 429 | 500..=599 => Action::Retry(Duration::from_millis(250)),
                400 | 422 => Action::Fail,
                _ => Action::NextCandidate,
            };
            assert_eq!(got, want, "status {status}");
        }
    }

    #[test]
    fn an_unusable_provider_moves_on_at_once_and_refusals_are_lasting() {
        let p = default_policy();
        assert_eq!(
            decide(&Failure::Unusable, 1, &p, 0.5),
            Action::NextCandidate
        );
        for f in [http(401), http(403), http(404), Failure::Connect] {
            assert!(is_lasting(&f), "{f:?}");
        }
        for f in [
            http(429),
            http(500),
            http(400),
            Failure::Timeout,
            Failure::Reset,
            Failure::Unusable,
        ] {
            assert!(!is_lasting(&f), "{f:?}");
        }
    }

    #[test]
    fn transport_errors_retry_then_fall_back() {
        let p = default_policy();
        for f in [
            Failure::Timeout,
            Failure::Connect,
            Failure::Reset,
            Failure::Malformed,
        ] {
            assert_eq!(
                decide(&f, 1, &p, 1.0),
                Action::Retry(Duration::from_millis(500)),
                "{f:?}"
            );
            assert_eq!(
                decide(&f, 3, &p, 1.0),
                Action::Retry(Duration::from_secs(2)),
                "{f:?}"
            );
            assert_eq!(decide(&f, 4, &p, 1.0), Action::NextCandidate, "{f:?}");
        }
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy {
            max_retries: 40,
            ..default_policy()
        };
        assert_eq!(p.max_delay, Duration::from_secs(30));
        assert_eq!(
            decide(&Failure::Timeout, 40, &p, 0.999_999),
            Action::Retry(p.max_delay.mul_f64(0.5 + 0.5 * 0.999_999))
        );
    }

    #[test]
    fn retry_after_is_honoured() {
        let p = default_policy();
        let f = |secs| Failure::Http {
            status: 429,
            retry_after: Some(Duration::from_secs(secs)),
            context_length_exceeded: false,
        };
        assert_eq!(
            decide(&f(7), 1, &p, 0.0),
            Action::Retry(Duration::from_secs(7))
        );
        assert_eq!(
            decide(&f(0), 1, &p, 1.0),
            Action::Retry(Duration::from_millis(500))
        );
        assert_eq!(decide(&f(600), 1, &p, 0.0), Action::NextCandidate);
    }

    #[test]
    fn context_length_moves_to_a_larger_window() {
        let f = Failure::Http {
            status: 400,
            retry_after: None,
            context_length_exceeded: true,
        };
        assert_eq!(
            decide(&f, 1, &default_policy(), 0.5),
            Action::NextLargerContext
        );
    }
}
