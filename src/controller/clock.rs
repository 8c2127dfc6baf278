//! The apiserver's clock as the yardstick for time-driven transitions. G1 and G2 are promises
//! about durations as the cluster sees them; if this process's clock jumps forward, a pending
//! key could activate before it was served for `prePublish`, or a retired key leave before its
//! grace period. So activations and removals wait while the two clocks disagree by more than
//! [`MAX_CLOCK_SKEW`] (revocation and first keys do not wait: they are not timed).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::fmt::rfc2822::DateTimeParser;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;

/// The most the two clocks may disagree before time-driven transitions wait. The apiserver's
/// `Date` header has one-second resolution, so the measurement itself is good to about a second
/// plus half a round trip; prePublish and gracePeriod are honoured to within this bound.
pub const MAX_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(5);

/// A measurement is reused this long, unless the wall clock moved differently from the
/// monotonic clock since (a jump), which forces a new one.
const MEASUREMENT_LIFETIME: Duration = Duration::from_secs(10);
const JUMP_TOLERANCE: SignedDuration = SignedDuration::from_secs(1);

pub struct ApiClock {
    client: Client,
    last: Mutex<Option<Measurement>>,
}

#[derive(Clone, Copy, Debug)]
struct Measurement {
    at: Instant,
    wall: Timestamp,
    /// Local wall clock minus the apiserver's.
    skew: SignedDuration,
}

/// How this process's clock compares with the apiserver's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockReading {
    /// Local minus apiserver.
    pub skew: SignedDuration,
}

impl ClockReading {
    pub fn in_sync(&self) -> bool {
        self.skew.abs() <= MAX_CLOCK_SKEW
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("cannot read the apiserver's clock: {0}")]
    Request(#[from] kube::Error),
    #[error("the apiserver's response has no usable Date header")]
    NoDate,
}

impl ApiClock {
    pub fn new(client: Client) -> Self {
        ApiClock {
            client,
            last: Mutex::new(None),
        }
    }

    /// The current reading: a recent measurement, or a new one.
    pub async fn read(&self) -> Result<ClockReading, ClockError> {
        if let Some(skew) = self.reusable(Instant::now(), Timestamp::now()) {
            return Ok(ClockReading { skew });
        }
        let sent = Timestamp::now();
        let request = http::Request::get("/version")
            .body(kube::client::Body::from(Vec::new()))
            .map_err(kube::Error::HttpError)?;
        let response = self.client.send(request).await?;
        let received = Timestamp::now();
        let date = response
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .ok_or(ClockError::NoDate)?;
        let skew = skew_from(date, sent, received).ok_or(ClockError::NoDate)?;
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Measurement {
                at: Instant::now(),
                wall: received,
                skew,
            });
        }
        Ok(ClockReading { skew })
    }

    fn reusable(&self, now: Instant, wall: Timestamp) -> Option<SignedDuration> {
        let last = (*self.last.lock().ok()?)?;
        let elapsed = now.checked_duration_since(last.at)?;
        let wall_elapsed = wall.duration_since(last.wall);
        let monotonic = SignedDuration::try_from(elapsed).ok()?;
        let jumped = (wall_elapsed - monotonic).abs() > JUMP_TOLERANCE;
        (elapsed < MEASUREMENT_LIFETIME && !jumped).then_some(last.skew)
    }
}

/// Local minus apiserver time, from a `Date` header (RFC 9110 IMF-fixdate, whole seconds) seen
/// between `sent` and `received`: the apiserver's instant lies in [date, date + 1 s), ours
/// around the middle of the round trip.
fn skew_from(date: &str, sent: Timestamp, received: Timestamp) -> Option<SignedDuration> {
    let server = DateTimeParser::new().parse_timestamp(date).ok()?;
    let server_mid = server.checked_add(SignedDuration::from_millis(500)).ok()?;
    let local_mid = sent.checked_add(received.duration_since(sent) / 2).ok()?;
    Some(local_mid.duration_since(server_mid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn skew_is_measured_from_the_date_header_at_the_middle_of_the_round_trip() {
        let date = "Wed, 02 Dec 2026 12:00:00 GMT";
        let sent = at("2026-12-02T12:00:00.400Z");
        let received = at("2026-12-02T12:00:00.600Z");
        assert_eq!(skew_from(date, sent, received), Some(SignedDuration::ZERO));
        let ahead = skew_from(
            date,
            at("2026-12-02T13:00:00.5Z"),
            at("2026-12-02T13:00:00.5Z"),
        );
        assert_eq!(ahead, Some(SignedDuration::from_hours(1)));
        assert!(
            !ClockReading {
                skew: ahead.unwrap()
            }
            .in_sync()
        );
        let behind = skew_from(
            date,
            at("2026-12-02T11:59:57.5Z"),
            at("2026-12-02T11:59:57.5Z"),
        );
        assert_eq!(behind, Some(SignedDuration::from_secs(-3)));
        assert!(
            ClockReading {
                skew: behind.unwrap()
            }
            .in_sync()
        );
    }

    #[test]
    fn a_date_header_that_is_not_a_date_gives_no_reading() {
        let now = Timestamp::now();
        for date in ["", "yesterday", "Wed, 02 Dec 2026 25:00:00 GMT", "\u{0}"] {
            assert_eq!(skew_from(date, now, now), None, "{date:?}");
        }
    }
}
