//! The submitter: one queue message -> at most one order at the broker for that attempt.

use closeflow_domain::{intent_for, record_submission, OrderStatus, SubmitAnswer, SubmitRequest};
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

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
    let answer = match broker.submit_order(&intent).await {
        // An order object that comes back already rejected is a definitive refusal too.
        Ok(order) if order.status == OrderStatus::Rejected => SubmitAnswer::Rejected {
            reason: format!("order {} rejected by the broker on submission", order.broker_order_id),
        },
        Ok(order) => SubmitAnswer::Accepted(order.to_update()),
        Err(BrokerError::DuplicateClientOrderId) => {
            // An earlier delivery reached the broker: record that order, place nothing.
            match broker.get_order_by_client_id(&intent.client_order_id).await {
                Ok(order) => SubmitAnswer::Accepted(order.to_update()),
                Err(e) => return Err(SubmitError::Ambiguous(format!("duplicate, then lookup failed: {e}"))),
            }
        }
        Err(BrokerError::Rejected(reason)) => SubmitAnswer::Rejected { reason },
        Err(e @ (BrokerError::Ambiguous(_) | BrokerError::NotFound)) => {
            return Err(SubmitError::Ambiguous(e.to_string()))
        }
    };
    let now = clock.now();
    closeflow_store::modify(store, &key, |agg| {
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
    })
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
        async fn get_order_by_client_id(&self, _: &ClientOrderId) -> Result<BrokerOrder, BrokerError> {
            Err(BrokerError::NotFound)
        }
        async fn cancel_order(&self, _: &str) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn list_positions(&self) -> Result<Vec<BrokerPosition>, BrokerError> {
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
                position_id: pid.clone(),
                account_id: AccountId::parse("a").unwrap(),
                symbol: "AAPL".into(),
                asset_type: AssetType::Equity,
                quantity: Quantity::from(3),
                avg_entry_price: None,
                strategy_id: None,
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
