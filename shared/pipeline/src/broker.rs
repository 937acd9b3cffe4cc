//! The broker port: narrow, and the same for Alpaca and the simulated broker.

use async_trait::async_trait;
use closeflow_domain::{ClientOrderId, OrderIntent, OrderStatus, OrderUpdate, Quantity, Timestamp};

/// A broker's view of one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOrder {
    pub broker_order_id: String,
    pub client_order_id: ClientOrderId,
    pub status: OrderStatus,
    pub filled_qty: Quantity,
    pub filled_avg_price: Option<Quantity>,
    pub updated_at: Timestamp,
}

impl BrokerOrder {
    /// As an order update (submit answers and lookups go through the webhook's merge rules).
    pub fn to_update(&self) -> OrderUpdate {
        OrderUpdate {
            client_order_id: self.client_order_id.clone(),
            broker_order_id: Some(self.broker_order_id.clone()),
            status: self.status,
            filled_qty: self.filled_qty,
            filled_avg_price: self.filled_avg_price,
            seq: None,
            execution_id: None,
            updated_at: self.updated_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPosition {
    pub symbol: String,
    /// Signed like closeflow's positions.
    pub qty: Quantity,
}

/// Broker failures, classified by what they let us conclude.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// Definitive: the order does not exist and will not (insufficient qty, invalid order).
    #[error("broker refused the order: {0}")]
    Rejected(String),
    /// An order with this client order id already exists: look it up, never resubmit.
    #[error("an order with this client order id already exists")]
    DuplicateClientOrderId,
    #[error("order not found at the broker")]
    NotFound,
    /// Unknown outcome (timeout, 5xx, 429, network): never assume rejected.
    #[error("broker outcome unknown: {0}")]
    Ambiguous(String),
}

#[async_trait]
pub trait Broker: Send + Sync {
    async fn submit_order(&self, intent: &OrderIntent) -> Result<BrokerOrder, BrokerError>;
    async fn get_order_by_client_id(&self, id: &ClientOrderId) -> Result<BrokerOrder, BrokerError>;
    async fn cancel_order(&self, broker_order_id: &str) -> Result<(), BrokerError>;
    async fn list_positions(&self) -> Result<Vec<BrokerPosition>, BrokerError>;
}
