//! Broker trouble a close waits out, and the broker answers that end one (issue 9 item 4).
//! Rate limits, an open circuit breaker and refused credentials delay a close: it stays in
//! flight, an alert says why (once per episode), and the close-request view shows it as
//! `waiting_on_broker` until the close moves again. Nothing here fails a close.

use crate::model::PositionAggregate;
use crate::reconcile::{Alert, AlertKind};
use crate::Timestamp;

/// The account's request budget at the broker is spent; the close waits for the next window.
pub const RATE_LIMITED: AlertKind = AlertKind::BrokerRateLimited;
/// The circuit breaker is open: the broker did not answer several times in a row.
pub const UNREACHABLE: AlertKind = AlertKind::BrokerUnreachable;
/// The broker refused the account's key pair: a configuration error, for a human.
pub const CREDENTIALS_REJECTED: AlertKind = AlertKind::BrokerCredentialsRejected;
/// A close failed because the symbol's open orders hold its quantity (the failure code).
pub const BLOCKED_BY_OPEN_ORDERS: AlertKind = AlertKind::BlockedByOpenOrders;
/// A close failed because closeflow has no key pair for its account (the failure code).
pub const NO_CREDENTIALS: AlertKind = AlertKind::NoBrokerCredentials;

/// The alert kinds that mean "the close waits on the broker".
pub fn is_waiting_kind(kind: AlertKind) -> bool {
    matches!(kind, RATE_LIMITED | UNREACHABLE | CREDENTIALS_REJECTED)
}

/// Why the close in flight waits on the broker, if it does: a broker-trouble alert newer
/// than the close's last change. Any progress of the close ends the wait.
pub fn waiting_on_broker(agg: &PositionAggregate) -> Option<&Alert> {
    let cr = agg.latest_close_request.as_ref().filter(|c| !c.status.is_terminal())?;
    agg.last_alert
        .as_ref()
        .filter(|a| is_waiting_kind(a.kind) && a.at >= cr.updated_at)
}

/// Notes that the broker made the close in flight wait. `None` when there is nothing to
/// note (no close in flight, or this wait is already noted: alerted once per episode).
/// The close's own clock (`updated_at`, what the reconciler's deadlines count from) is not
/// moved: waiting is not progress.
pub fn note_broker_trouble(
    agg: &PositionAggregate,
    kind: AlertKind,
    message: String,
    now: Timestamp,
) -> Option<PositionAggregate> {
    agg.latest_close_request.as_ref().filter(|c| !c.status.is_terminal())?;
    if waiting_on_broker(agg).is_some_and(|a| a.kind == kind) {
        return None;
    }
    let mut next = agg.clone();
    next.last_alert = Some(Alert { kind, message, at: now });
    next.position.version += 1;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{close, register, t0};
    use crate::{decide_close, decide_register, CloseDecision, RegisterDecision};

    fn closing() -> PositionAggregate {
        let Ok(RegisterDecision::Created(p)) = decide_register(None, &register("p", "3", t0())) else {
            panic!("registered")
        };
        let open = PositionAggregate::new(p);
        let CloseDecision::Create(agg) = decide_close(Some(&open), &close("p", "k", t0())) else {
            panic!("closing")
        };
        *agg
    }

    #[test]
    fn a_wait_is_noted_once_shown_while_nothing_moves_and_ends_with_progress() {
        let agg = closing();
        assert!(waiting_on_broker(&agg).is_none());
        let later = t0() + chrono::TimeDelta::seconds(5);
        let noted = note_broker_trouble(&agg, RATE_LIMITED, "429".into(), later).expect("noted");
        assert_eq!(waiting_on_broker(&noted).map(|a| a.kind), Some(RATE_LIMITED));
        assert_eq!(
            noted.latest_close_request, agg.latest_close_request,
            "the close's clock is not moved"
        );
        assert_eq!(noted.position.version, agg.position.version + 1);
        assert_eq!(
            note_broker_trouble(&noted, RATE_LIMITED, "429".into(), later),
            None,
            "once"
        );
        let other = note_broker_trouble(&noted, UNREACHABLE, "breaker".into(), later).expect("another kind");
        assert_eq!(waiting_on_broker(&other).map(|a| a.kind), Some(UNREACHABLE));
        let mut moved = other.clone();
        crate::lifecycle::touch(&mut moved, later + chrono::TimeDelta::seconds(1));
        assert!(waiting_on_broker(&moved).is_none(), "progress ends the wait");
    }
}
