//! A trader's cancel of a close's working orders, carried out: recorded first (so what is
//! left is not retried behind the trader's back), then asked of the broker, then whatever
//! the broker says is applied through the usual merge rules. Nothing is assumed: the close
//! moves only on the broker's word. The API's cancel route and the chaos suite both run
//! this one function.

use closeflow_domain::{mleg_client_order_id, Access, CloseRequestId, ManageRejection};
use closeflow_store::{AggregateKey, CloseStore, StoreError};

use crate::broker::{Broker, BrokerError};
use crate::clock::Clock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Every working order was asked to cancel and looked up again.
    Asked,
    /// The cancel of some order did not reach the broker (unknown outcome): ask again.
    BrokerUnavailable(String),
    Refused(ManageRejection),
}

pub async fn cancel_close(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    clock: &dyn Clock,
    id: &CloseRequestId,
    access: &Access,
    actor: &str,
) -> Result<CancelOutcome, StoreError> {
    let (account, orders) = match store.request_cancel(id, access, actor, clock.now()).await? {
        Ok(asked) => asked,
        Err(r) => return Ok(CancelOutcome::Refused(r)),
    };
    // A leg of a multi-leg order is canceled with its order: the broker takes (and cancels)
    // the order as a whole, never one leg of it.
    let agg = store.aggregate(&AggregateKey::CloseRequest(*id)).await?;
    let tag = agg.as_ref().and_then(|a| crate::mleg::mleg_tag(a, id));
    // The broker cancels a multi-leg order whole, so one leg's cancel is every leg's: each
    // is recorded first, so none is retried behind the trader's back, and each reads its
    // outcome from the order once it is canceled.
    let mut siblings = Vec::new();
    if let Some(t) = &tag {
        for leg in store.strategy_close_legs(&t.id).await? {
            let Some(cr) = leg
                .latest_close_request
                .as_ref()
                .filter(|c| c.id != *id && c.strategy_close.is_some_and(|x| x.id == t.id))
            else {
                continue;
            };
            // Refused: nothing of that leg is working (ended, or not yet at the broker).
            if let Ok((_, working)) = store.request_cancel(&cr.id, access, actor, clock.now()).await? {
                siblings.extend(working.into_iter().map(|(cid, _)| (leg.clone(), cid)));
            }
        }
    }
    let mut unreachable = None;
    for (client_order_id, broker_order_id) in &orders {
        let target = match &tag {
            None => broker_order_id.clone(),
            Some(t) => {
                let name = mleg_client_order_id(&t.id, client_order_id.attempt);
                match broker.get_mleg_order_by_client_id(&account, &name).await {
                    Ok(m) => m.order.broker_order_id,
                    // Not (or no longer) at the broker: nothing to cancel.
                    Err(BrokerError::NotFound) => continue,
                    Err(e) => {
                        tracing::warn!(%client_order_id, error = %e, "multi-leg order not found for its cancel");
                        unreachable = Some(e.to_string());
                        continue;
                    }
                }
            }
        };
        match broker.cancel_order(&account, &target).await {
            // Already final or gone: the lookup below says how it ended.
            Ok(()) | Err(BrokerError::NotFound | BrokerError::Rejected(_)) => {}
            Err(e) => {
                tracing::warn!(%client_order_id, error = %e, "cancel did not reach the broker");
                unreachable = Some(e.to_string());
                continue;
            }
        }
        // The broker's answer to the trader's cancel, recorded as the trader's change (a
        // leg's, read from its multi-leg order).
        let looked = match &agg {
            Some(a) => crate::mleg::lookup_order(broker, a, client_order_id).await,
            None => broker.get_order_by_client_id(&account, client_order_id).await,
        };
        if let Ok(order) = looked {
            store.apply_order_update(&order.to_update(), clock.now(), actor).await?;
        }
    }
    for (leg, cid) in &siblings {
        if let Ok(order) = crate::mleg::lookup_order(broker, leg, cid).await {
            store.apply_order_update(&order.to_update(), clock.now(), actor).await?;
        }
    }
    Ok(match unreachable {
        Some(e) => CancelOutcome::BrokerUnavailable(e),
        None => CancelOutcome::Asked,
    })
}
