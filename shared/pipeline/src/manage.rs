//! A trader's cancel of a close's working orders, carried out: recorded first (so what is
//! left is not retried behind the trader's back), then asked of the broker, then whatever
//! the broker says is applied through the usual merge rules. Nothing is assumed: the close
//! moves only on the broker's word. The API's cancel route and the chaos suite both run
//! this one function.

use closeflow_domain::{Access, CloseRequestId, ManageRejection};
use closeflow_store::{CloseStore, StoreError};

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
    let mut unreachable = None;
    for (client_order_id, broker_order_id) in &orders {
        match broker.cancel_order(&account, broker_order_id).await {
            // Already final or gone: the lookup below says how it ended.
            Ok(()) | Err(BrokerError::NotFound | BrokerError::Rejected(_)) => {}
            Err(e) => {
                tracing::warn!(%client_order_id, error = %e, "cancel did not reach the broker");
                unreachable = Some(e.to_string());
                continue;
            }
        }
        // The broker's answer to the trader's cancel, recorded as the trader's change.
        if let Ok(order) = broker.get_order_by_client_id(&account, client_order_id).await {
            store.apply_order_update(&order.to_update(), clock.now(), actor).await?;
        }
    }
    Ok(match unreachable {
        Some(e) => CancelOutcome::BrokerUnavailable(e),
        None => CancelOutcome::Asked,
    })
}
