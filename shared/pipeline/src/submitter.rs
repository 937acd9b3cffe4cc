//! The submitter: one queue message -> at most one order at the broker for that attempt.

use closeflow_domain::{intent_for, record_submission, Applied, SubmitAnswer, SubmitRequest};
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

pub async fn submit(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    clock: &dyn Clock,
    req: &SubmitRequest,
) -> Result<SubmitOutcome, SubmitError> {
    let key = AggregateKey::Position(req.position_id.clone());
    let Some(current) = store.modify(&key, &|_| None).await? else {
        return Ok(SubmitOutcome::NothingToDo);
    };
    let Some(intent) = intent_for(&current.before, req) else {
        return Ok(SubmitOutcome::NothingToDo);
    };
    let answer = match broker.submit_order(&intent).await {
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
    store
        .modify(&key, &|agg| match record_submission(agg, req, &answer, now) {
            Ok(Applied::Changed(next)) => Some(*next),
            _ => None,
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
