//! The multi-leg order of an `mleg` strategy close at the broker: placing it (one per
//! attempt, whichever leg's message comes first) and looking a leg's share of it up.
//!
//! Every leg's close request still gets its own submit message. The first one to run
//! places the attempt's order under its deterministic name (`{strategy_close_id}-{n}`)
//! and records it on every leg; the others then find their leg recorded and do nothing.
//! Two running at once both name the same order: the broker refuses the second as a
//! duplicate and it is answered by lookup, so an attempt never has two orders.

use closeflow_domain::trouble::{BLOCKED_BY_OPEN_ORDERS, NO_CREDENTIALS};
use closeflow_domain::{
    leg_updates, mleg_client_order_id, mleg_intent, record_submission, ClientOrderId, MlegError, OrderStatus,
    PositionAggregate, StrategyCloseId, StrategyCloseMode, StrategyCloseTag, SubmitAnswer, SubmitRequest,
};
use closeflow_store::{AggregateKey, CloseStore, Step};

use crate::broker::{Broker, BrokerError, BrokerMlegOrder, BrokerOrder};
use crate::clock::Clock;
use crate::submitter::{SubmitError, SubmitOutcome};

/// The strategy close a leg's close request belongs to, when it closes in `mleg` mode.
pub fn mleg_tag(
    agg: &PositionAggregate,
    close_request_id: &closeflow_domain::CloseRequestId,
) -> Option<StrategyCloseTag> {
    agg.close_request(close_request_id)
        .and_then(|(cr, _)| cr.strategy_close)
        .filter(|t| t.mode == StrategyCloseMode::Mleg)
}

/// What the broker said to the attempt's multi-leg order.
enum Answer {
    Placed(BrokerMlegOrder),
    /// The same answer for every leg (refused, rejected).
    Each(SubmitAnswer),
}

/// Places (or finds) the multi-leg order of `req`'s attempt and records it on every leg.
pub async fn submit_mleg(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    clock: &dyn Clock,
    req: &SubmitRequest,
    id: &StrategyCloseId,
) -> Result<SubmitOutcome, SubmitError> {
    let legs = store.strategy_close_legs(id).await?;
    let answer = match mleg_intent(id, req.attempt, &legs) {
        Ok(None) => return Ok(SubmitOutcome::NothingToDo),
        // Another leg is about to be retried into this attempt: wait for it (the message
        // comes back at the queue's redelivery pace; in AWS its visibility timeout).
        Err(e @ MlegError::LegBehind(_)) => {
            return Err(SubmitError::TryLater {
                reason: e.to_string(),
                retry_after: None,
            })
        }
        // Legs that no longer move together are not sent at all: each fails for a human.
        Err(e) => Answer::Each(SubmitAnswer::Rejected {
            reason: format!("multi-leg order not placed: {e}"),
        }),
        Ok(Some(intent)) => match place(broker, &intent).await {
            Ok(a) => a,
            Err(e) if e.is_try_later() => {
                tracing::warn!(client_order_id = %intent.client_order_id, error = %e, "broker asks to wait; multi-leg close delayed");
                return Err(SubmitError::TryLater {
                    reason: e.to_string(),
                    retry_after: e.retry_after(),
                });
            }
            Err(e) => return Err(SubmitError::Ambiguous(e.to_string())),
        },
    };
    let now = clock.now();
    let per_leg: Vec<(SubmitRequest, SubmitAnswer)> = match &answer {
        Answer::Placed(order) => match leg_updates(id, &legs, &order.to_report()) {
            Ok(updates) => updates
                .into_iter()
                .map(|(position_id, u)| {
                    let leg = SubmitRequest {
                        position_id,
                        close_request_id: u.client_order_id.close_request_id,
                        attempt: req.attempt,
                    };
                    (leg, SubmitAnswer::Accepted(u))
                })
                .collect(),
            // The broker holds an order whose legs do not fit ours: never guessed; the
            // reconciler's lookups keep the legs in view for a human.
            Err(e) => return Err(SubmitError::Ambiguous(format!("multi-leg answer refused: {e}"))),
        },
        Answer::Each(a) => legs
            .iter()
            .filter_map(|l| {
                let cr = l.latest_close_request.as_ref()?;
                (cr.strategy_close.map(|t| t.id) == Some(*id)).then(|| {
                    let leg = SubmitRequest {
                        position_id: l.position.id.clone(),
                        close_request_id: cr.id,
                        attempt: req.attempt,
                    };
                    (leg, a.clone())
                })
            })
            .collect(),
    };
    for (leg, a) in &per_leg {
        closeflow_store::modify(
            store,
            &AggregateKey::Position(leg.position_id.clone()),
            closeflow_domain::audit::actor::SUBMITTER,
            |agg| Step::applied(record_submission(agg, leg, a, now)),
        )
        .await?;
    }
    Ok(match answer {
        Answer::Placed(order) => {
            tracing::info!(client_order_id = %order.order.client_order_id, legs = per_leg.len(), "multi-leg close order placed");
            SubmitOutcome::Placed
        }
        Answer::Each(SubmitAnswer::Rejected { reason }) | Answer::Each(SubmitAnswer::Refused { reason, .. }) => {
            tracing::warn!(strategy_close_id = %id, %reason, "multi-leg close order not placed; legs need attention");
            SubmitOutcome::Rejected(reason)
        }
        Answer::Each(SubmitAnswer::Accepted(_)) => SubmitOutcome::Placed,
    })
}

async fn place(broker: &dyn Broker, intent: &closeflow_domain::MlegIntent) -> Result<Answer, BrokerError> {
    match broker.submit_mleg_order(intent).await {
        Ok(o) if o.order.status == OrderStatus::Rejected => Ok(Answer::Each(SubmitAnswer::Rejected {
            reason: format!(
                "multi-leg order {} rejected by the broker on submission",
                o.order.broker_order_id
            ),
        })),
        Ok(o) => Ok(Answer::Placed(o)),
        // An earlier delivery reached the broker: record that order, place nothing.
        Err(BrokerError::DuplicateClientOrderId) => match broker
            .get_mleg_order_by_client_id(&intent.account_id, &intent.client_order_id)
            .await
        {
            Ok(o) => Ok(Answer::Placed(o)),
            Err(e) if e.is_try_later() => Err(e),
            Err(e) => Err(BrokerError::Ambiguous(format!("duplicate, then lookup failed: {e}"))),
        },
        Err(BrokerError::Rejected(reason)) => Ok(Answer::Each(SubmitAnswer::Rejected { reason })),
        Err(BrokerError::NoCredentials(account)) => Ok(Answer::Each(SubmitAnswer::Refused {
            code: NO_CREDENTIALS,
            reason: format!("no broker credentials for account {account}"),
        })),
        // A strategy close cancels nobody's orders: a human decides.
        Err(BrokerError::BlockedByOpenOrders { held_qty, message }) => Ok(Answer::Each(SubmitAnswer::Refused {
            code: BLOCKED_BY_OPEN_ORDERS,
            reason: format!("held_qty {held_qty}: a leg is held by open orders at the broker ({message})"),
        })),
        Err(e) => Err(e),
    }
}

/// The broker's view of one order of `agg`: a leg of an `mleg` strategy close is looked up
/// as its share of the attempt's multi-leg order (the broker never saw the leg's own
/// name), reported under the leg's own client order id; any other order as it is.
pub async fn lookup_order(
    broker: &dyn Broker,
    agg: &PositionAggregate,
    id: &ClientOrderId,
) -> Result<BrokerOrder, BrokerError> {
    let account = &agg.position.account_id;
    let Some(tag) = mleg_tag(agg, &id.close_request_id) else {
        return broker.get_order_by_client_id(account, id).await;
    };
    let order = broker
        .get_mleg_order_by_client_id(account, &mleg_client_order_id(&tag.id, id.attempt))
        .await?;
    // One leg alone cannot be split by ratio: its own report must be in the answer.
    let leg = order.legs.iter().find(|l| {
        l.symbol
            .chars()
            .filter(|c| !c.is_whitespace())
            .eq(agg.position.symbol.chars().filter(|c| !c.is_whitespace()))
    });
    let leg = leg.ok_or_else(|| {
        BrokerError::Ambiguous(format!(
            "multi-leg order {} reports no leg {}",
            order.order.broker_order_id, agg.position.symbol
        ))
    })?;
    Ok(BrokerOrder {
        broker_order_id: leg
            .broker_order_id
            .clone()
            .unwrap_or_else(|| order.order.broker_order_id.clone()),
        client_order_id: id.clone(),
        status: leg.status.unwrap_or(order.order.status),
        filled_qty: leg.filled_qty,
        filled_avg_price: leg.filled_avg_price,
        updated_at: order.order.updated_at,
    })
}
