//! A risk guard that fired, turned into what it asks for: a bulk close of what the event
//! scopes (`close`) or an emergency liquidation of the account (`liquidate`), started once
//! per event id whichever way the event arrives (EventBridge delivers at least once; the
//! HTTP route may be retried), with the guard as the actor of every close it makes.

use closeflow_domain::{
    BulkClose, BulkCloseCommand, BulkFilter, Fingerprint, GuardAction, GuardEvent, GuardScope, IdempotencyKey,
    TimeInForce, Timestamp, LIQUIDATION_ATTEMPTS,
};

use crate::bulk::{start_bulk, JobError, Started};
use crate::clock::Clock;
use crate::queue::OrderQueue;
use closeflow_store::CloseStore;

/// The bulk close (or liquidation) a guard event asks for. Its key is `guard:<event_id>`;
/// its fingerprint covers the whole event, so the same id with other contents is refused.
pub fn guard_bulk_close(event: &GuardEvent, max_retries: u32, now: Timestamp) -> Result<BulkClose, String> {
    let idempotency_key = IdempotencyKey::parse(&event.bulk_key()).map_err(|e| format!("event_id: {e}"))?;
    let filter = match event.scope() {
        GuardScope::WholeAccount => BulkFilter::default(),
        GuardScope::Symbols(s) => BulkFilter {
            symbols: Some(s.clone()),
            ..BulkFilter::default()
        },
        GuardScope::Positions(p) => BulkFilter {
            position_ids: Some(p.clone()),
            ..BulkFilter::default()
        },
    };
    let cmd = BulkCloseCommand {
        account_id: event.account_id().clone(),
        idempotency_key,
        fingerprint: Fingerprint::of_body(&serde_json::json!({ "guard": event.to_body() })),
        actor: event.actor(),
        reason: Some(event.reason()),
        filter,
        // A guard acts now: orders holding the shares it closes are in the way.
        cancel_open_orders: true,
        time_in_force: TimeInForce::Day,
        max_retries,
        now,
    };
    Ok(match event.action() {
        GuardAction::Close => BulkClose::new(cmd),
        GuardAction::Liquidate => BulkClose::liquidation(cmd, LIQUIDATION_ATTEMPTS),
    })
}

/// Starts what the event asks for (or finds it, for a repeated event).
pub async fn start_guard(
    store: &dyn CloseStore,
    queue: &dyn OrderQueue,
    clock: &dyn Clock,
    event: &GuardEvent,
    max_retries: u32,
) -> Result<Result<Started, String>, JobError> {
    let bulk = match guard_bulk_close(event, max_retries, clock.now()) {
        Ok(b) => b,
        Err(why) => return Ok(Err(why)),
    };
    tracing::warn!(
        guard_id = event.guard_id(), event_id = event.event_id(), account_id = %event.account_id(),
        action = event.action().as_str(), bulk_close_id = %bulk.id, "guard fired"
    );
    start_bulk(store, queue, clock, bulk).await.map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: &str) -> GuardEvent {
        GuardEvent::from_body(body.as_bytes()).unwrap()
    }

    #[test]
    fn a_guard_event_names_one_bulk_close_scoped_as_it_says() {
        let now = chrono::DateTime::from_timestamp(1_767_362_400, 0).unwrap();
        let e = event(
            r#"{"event_id":"e-1","guard_id":"gap-1","guard":"market_gap","account_id":"acct-1",
                "symbols":["AAPL"],"action":"close","observed":"7.5","threshold":"5"}"#,
        );
        let b = guard_bulk_close(&e, 3, now).unwrap();
        assert_eq!(b.idempotency_key.as_str(), "guard:e-1");
        assert_eq!(b.actor, "guard:gap-1");
        assert_eq!(b.filter.symbols, Some(vec!["AAPL".to_string()]));
        assert!(b.liquidation.is_none() && b.cancel_open_orders);
        assert_eq!(
            b,
            guard_bulk_close(&e, 3, now).unwrap(),
            "the same event, the same bulk close"
        );
        let l = event(
            r#"{"event_id":"e-2","guard_id":"dd-1","guard":"drawdown","account_id":"acct-1",
                "action":"liquidate","observed":"12","threshold":"10"}"#,
        );
        let b = guard_bulk_close(&l, 3, now).unwrap();
        assert!(b.liquidation.is_some() && b.filter == BulkFilter::default());
        let other = event(
            r#"{"event_id":"e-2","guard_id":"dd-1","guard":"drawdown","account_id":"acct-1",
                "action":"liquidate","observed":"13","threshold":"10"}"#,
        );
        let o = guard_bulk_close(&other, 3, now).unwrap();
        assert_eq!(o.id, b.id);
        assert_ne!(
            o.fingerprint, b.fingerprint,
            "other contents under the same id are told apart"
        );
    }
}
