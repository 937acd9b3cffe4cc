//! The submitter: one queue message -> at most one order at the broker for that attempt.

use std::time::Duration;

use closeflow_domain::trouble::{note_broker_trouble, BLOCKED_BY_OPEN_ORDERS, NO_CREDENTIALS};
use closeflow_domain::{
    intent_for, record_submission, ClientOrderId, OrderIntent, OrderStatus, SubmitAnswer, SubmitRequest,
};
use closeflow_store::{AggregateKey, CloseStore, StoreError};

use crate::broker::{Broker, BrokerError};
use crate::clock::Clock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// The broker holds the order and it is recorded.
    Placed,
    /// The broker refused it for good; the close request failed with the reason.
    Rejected(String),
    /// The close request no longer waits for this attempt (redelivery, replayed record).
    NothingToDo,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Outcome unknown: leave the message for redelivery (same client order id, so the
    /// broker refuses a duplicate) and the reconciler.
    #[error("broker outcome unknown: {0}")]
    Ambiguous(String),
    /// The broker made the close wait (rate limit, open circuit breaker, refused keys):
    /// nothing was placed and nothing failed; deliver the message again after
    /// `retry_after` (when the broker said).
    #[error("broker asks to wait: {reason}")]
    TryLater {
        reason: String,
        retry_after: Option<Duration>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long the submitter waits for the broker to confirm the cancels of a symbol's open
/// orders before it leaves the message for redelivery (a bounded wait: a Lambda's time).
const CANCEL_CONFIRM_CHECKS: u32 = 10;
const CANCEL_CONFIRM_PAUSE: Duration = Duration::from_millis(200);

#[tracing::instrument(name = "submit", skip_all, fields(position_id = %req.position_id, close_request_id = %req.close_request_id, attempt = req.attempt))]
pub async fn submit(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    clock: &dyn Clock,
    req: &SubmitRequest,
) -> Result<SubmitOutcome, SubmitError> {
    let key = AggregateKey::Position(req.position_id.clone());
    let Some(current) = store.aggregate(&key).await? else {
        return Ok(SubmitOutcome::NothingToDo);
    };
    let Some(intent) = intent_for(&current, req) else {
        return Ok(SubmitOutcome::NothingToDo);
    };
    // A leg of an `mleg` strategy close is placed with its strategy's other legs, as one
    // multi-leg order.
    if let Some(tag) = crate::mleg::mleg_tag(&current, &req.close_request_id) {
        return crate::mleg::submit_mleg(store, broker, clock, req, &tag.id).await;
    }
    let cancel_open_orders = current
        .latest_close_request
        .as_ref()
        .is_some_and(|c| c.cancel_open_orders);
    let answer = match place(broker, &intent, cancel_open_orders).await {
        Ok(answer) => answer,
        Err(e) if e.is_try_later() => {
            // Seen on the close (once per episode) and alerted; the message comes back.
            let kind = e.trouble_kind().unwrap_or(closeflow_domain::trouble::UNREACHABLE);
            let message = format!("account {}: {e}; the close waits", intent.account_id);
            let now = clock.now();
            closeflow_store::modify(store, &key, closeflow_domain::audit::actor::SUBMITTER, |agg| {
                closeflow_store::Step {
                    write: note_broker_trouble(agg, kind, message.clone(), now),
                    decision: (),
                }
            })
            .await?;
            tracing::warn!(client_order_id = %intent.client_order_id, error = %e, "broker asks to wait; close delayed");
            return Err(SubmitError::TryLater {
                reason: e.to_string(),
                retry_after: e.retry_after(),
            });
        }
        Err(e) => return Err(SubmitError::Ambiguous(e.to_string())),
    };
    let now = clock.now();
    closeflow_store::modify(store, &key, closeflow_domain::audit::actor::SUBMITTER, |agg| {
        closeflow_store::Step::applied(record_submission(agg, req, &answer, now))
    })
    .await?;
    Ok(match answer {
        SubmitAnswer::Accepted(_) => {
            tracing::info!(client_order_id = %intent.client_order_id, "close order placed");
            SubmitOutcome::Placed
        }
        SubmitAnswer::Rejected { reason } => {
            tracing::warn!(client_order_id = %intent.client_order_id, %reason, "broker rejected the close order; position needs attention");
            SubmitOutcome::Rejected(reason)
        }
        SubmitAnswer::Refused { code, reason } => {
            tracing::warn!(client_order_id = %intent.client_order_id, code = code.as_str(), %reason, "close order not placed; position needs attention");
            SubmitOutcome::Rejected(format!("{code}: {reason}"))
        }
    })
}

/// Places the attempt's order and reads the broker's answer as a submission answer; an
/// error is an answer that decides nothing (try later, or unknown).
async fn place(
    broker: &dyn Broker,
    intent: &OrderIntent,
    cancel_open_orders: bool,
) -> Result<SubmitAnswer, BrokerError> {
    let mut canceled_once = false;
    loop {
        return match broker.submit_order(intent).await {
            // An order object that comes back already rejected is a definitive refusal too.
            Ok(order) if order.status == OrderStatus::Rejected => Ok(SubmitAnswer::Rejected {
                reason: format!("order {} rejected by the broker on submission", order.broker_order_id),
            }),
            Ok(order) => Ok(SubmitAnswer::Accepted(order.to_update())),
            Err(BrokerError::DuplicateClientOrderId) => {
                // An earlier delivery reached the broker: record that order, place nothing.
                match broker
                    .get_order_by_client_id(&intent.account_id, &intent.client_order_id)
                    .await
                {
                    Ok(order) => Ok(SubmitAnswer::Accepted(order.to_update())),
                    Err(e) if e.is_try_later() => Err(e),
                    Err(e) => Err(BrokerError::Ambiguous(format!("duplicate, then lookup failed: {e}"))),
                }
            }
            Err(BrokerError::Rejected(reason)) => Ok(SubmitAnswer::Rejected { reason }),
            Err(BrokerError::NoCredentials(account)) => Ok(SubmitAnswer::Refused {
                code: NO_CREDENTIALS,
                reason: format!("no broker credentials for account {account}"),
            }),
            Err(BrokerError::BlockedByOpenOrders { held_qty, message }) if cancel_open_orders && !canceled_once => {
                if cancel_symbol_orders(broker, intent).await? == 0 {
                    // Only closeflow's own orders hold it: those are never canceled here.
                    return Ok(blocked(intent, held_qty, &message));
                }
                canceled_once = true;
                tracing::info!(client_order_id = %intent.client_order_id, %held_qty, "open orders canceled as asked; placing the close again");
                continue;
            }
            Err(BrokerError::BlockedByOpenOrders { held_qty, message }) if canceled_once => {
                // Canceled and confirmed, yet held again (a new order arrived meanwhile):
                // the next delivery tries again.
                Err(BrokerError::Ambiguous(format!(
                    "{held_qty} still held by open orders: {message}"
                )))
            }
            Err(BrokerError::BlockedByOpenOrders { held_qty, message }) => Ok(blocked(intent, held_qty, &message)),
            Err(e) => Err(e),
        };
    }
}

fn blocked(intent: &OrderIntent, held_qty: closeflow_domain::Quantity, message: &str) -> SubmitAnswer {
    SubmitAnswer::Refused {
        code: BLOCKED_BY_OPEN_ORDERS,
        reason: format!(
            "held_qty {held_qty}: {} is held by open orders at the broker ({message}); \
             close again with cancel_open_orders: true to cancel them",
            intent.symbol
        ),
    }
}

/// Cancels the symbol's open orders that are not closeflow's (another close's order is
/// never touched), then waits until the broker lists none of them as open; how many.
async fn cancel_symbol_orders(broker: &dyn Broker, intent: &OrderIntent) -> Result<usize, BrokerError> {
    let account = &intent.account_id;
    let theirs = |o: &crate::broker::OpenOrder| ClientOrderId::parse(&o.client_order_id).is_err();
    let open: Vec<String> = broker
        .open_orders(account, &intent.symbol)
        .await?
        .into_iter()
        .filter(theirs)
        .map(|o| o.broker_order_id)
        .collect();
    for id in &open {
        match broker.cancel_order(account, id).await {
            // Gone already: nothing left to cancel.
            Ok(()) | Err(BrokerError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    for _ in 0..CANCEL_CONFIRM_CHECKS {
        let still: Vec<_> = broker
            .open_orders(account, &intent.symbol)
            .await?
            .into_iter()
            .filter(|o| open.contains(&o.broker_order_id))
            .collect();
        if still.is_empty() {
            return Ok(open.len());
        }
        tokio::time::sleep(CANCEL_CONFIRM_PAUSE).await;
    }
    Err(BrokerError::Ambiguous(format!(
        "the broker has not confirmed the cancel of {} open order(s) on {}",
        open.len(),
        intent.symbol
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{BrokerOrder, BrokerPosition};
    use crate::clock::ManualClock;
    use async_trait::async_trait;
    use chrono::TimeZone;
    use closeflow_domain::{
        AccountId, AssetType, ClientOrderId, CloseCommand, CloseRequestId, CloseRequestStatus, Fingerprint,
        IdempotencyKey, OrderIntent, PositionId, PositionStatus, Quantity, RegisterPosition,
    };
    use closeflow_store::{CloseOutcome, MemoryStore};

    /// Answers every submission with an order object whose status is `rejected`.
    struct RejectsInBody;

    #[async_trait]
    impl Broker for RejectsInBody {
        async fn submit_order(&self, intent: &OrderIntent) -> Result<BrokerOrder, BrokerError> {
            Ok(BrokerOrder {
                broker_order_id: "b-9".into(),
                client_order_id: intent.client_order_id.clone(),
                status: OrderStatus::Rejected,
                filled_qty: Quantity::ZERO,
                filled_avg_price: None,
                updated_at: chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            })
        }
        async fn get_order_by_client_id(&self, _: &AccountId, _: &ClientOrderId) -> Result<BrokerOrder, BrokerError> {
            Err(BrokerError::NotFound)
        }
        async fn cancel_order(&self, _: &AccountId, _: &str) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn list_positions(&self, _: &AccountId) -> Result<Vec<BrokerPosition>, BrokerError> {
            Ok(vec![])
        }
        async fn open_orders(&self, _: &AccountId, _: &str) -> Result<Vec<crate::broker::OpenOrder>, BrokerError> {
            Ok(vec![])
        }
        async fn account_equity(&self, _: &AccountId) -> Result<rust_decimal::Decimal, BrokerError> {
            Ok(rust_decimal::Decimal::from(100_000))
        }
        async fn account_open_orders(&self, _: &AccountId) -> Result<Vec<crate::broker::OpenOrder>, BrokerError> {
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn an_order_returned_as_rejected_fails_the_close_for_a_human() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let store = MemoryStore::new();
        let pid = PositionId::parse("p").unwrap();
        store
            .register_position(&RegisterPosition {
                source: None,
                position_id: pid.clone(),
                account_id: AccountId::parse("a").unwrap(),
                symbol: "AAPL".into(),
                asset_type: AssetType::Equity,
                quantity: Quantity::from(3),
                avg_entry_price: None,
                strategy_id: None,
                multiplier: None,
                actor: "tester".into(),
                access: closeflow_domain::Access::All,
                max_live_positions: 10,
                now,
            })
            .await
            .unwrap()
            .unwrap();
        let CloseOutcome::Created { close_request, .. } = store
            .open_close_request(&CloseCommand {
                position_id: pid.clone(),
                idempotency_key: IdempotencyKey::parse("k").unwrap(),
                fingerprint: Fingerprint::of_body(&serde_json::json!({})),
                new_id: CloseRequestId::new(&pid, [1; 16]),
                max_retries: 3,
                reason: None,
                cancel_open_orders: false,
                actor: "tester".into(),
                qty: None,
                options: closeflow_domain::OrderOptions::MARKET,
                access: closeflow_domain::Access::All,
                now,
            })
            .await
            .unwrap()
        else {
            panic!("created")
        };
        let req = SubmitRequest {
            position_id: pid.clone(),
            close_request_id: close_request.id,
            attempt: 1,
        };
        let out = submit(&store, &RejectsInBody, &ManualClock::new(now), &req)
            .await
            .unwrap();
        assert!(matches!(out, SubmitOutcome::Rejected(_)));
        let agg = store.aggregate(&AggregateKey::Position(pid)).await.unwrap().unwrap();
        assert_eq!(agg.position.status, PositionStatus::CloseFailed);
        assert_eq!(agg.latest_close_request.unwrap().status, CloseRequestStatus::Failed);
    }
}
