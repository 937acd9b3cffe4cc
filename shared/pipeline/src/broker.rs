//! The broker port: narrow, and the same for Alpaca and the simulated broker.

use std::time::Duration;

use async_trait::async_trait;
use closeflow_domain::{
    AccountId, ClientOrderId, MlegIntent, MlegLegReport, MlegReport, OrderIntent, OrderStatus, OrderUpdate, Price,
    Quantity, Timestamp,
};
use rust_decimal::Decimal;

/// A broker's view of one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOrder {
    pub broker_order_id: String,
    pub client_order_id: ClientOrderId,
    pub status: OrderStatus,
    pub filled_qty: Quantity,
    pub filled_avg_price: Option<Price>,
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

/// A broker's view of one multi-leg order: the order (quantities in strategy units) and
/// each leg's own report (quantities in that leg's contracts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMlegOrder {
    pub order: BrokerOrder,
    pub legs: Vec<MlegLegReport>,
}

impl BrokerMlegOrder {
    /// As a report for [`closeflow_domain::leg_updates`] (one order update per leg).
    pub fn to_report(&self) -> MlegReport {
        MlegReport {
            client_order_id: self.order.client_order_id.clone(),
            broker_order_id: Some(self.order.broker_order_id.clone()),
            status: self.order.status,
            filled_qty: self.order.filled_qty,
            legs: self.legs.clone(),
            seq: None,
            execution_id: None,
            updated_at: self.order.updated_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPosition {
    pub symbol: String,
    /// Signed like closeflow's positions.
    pub qty: Quantity,
    /// The broker's average entry price, when it reports one (sync compares it).
    pub avg_entry_price: Option<Price>,
}

/// An order still working at the broker (any client's), as `open_orders` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOrder {
    pub broker_order_id: String,
    /// Whoever named it: closeflow's ids parse as a `ClientOrderId`, others do not.
    pub client_order_id: String,
    pub symbol: String,
    pub qty: Quantity,
    pub filled_qty: Quantity,
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
    /// Unknown outcome (timeout, 5xx, network): never assume rejected.
    #[error("broker outcome unknown: {0}")]
    Ambiguous(String),
    /// The account's request budget is spent (429, or our own limiter would wait too
    /// long): nothing was sent or the broker refused to look; try after `retry_after`.
    #[error("broker rate limit reached; try again in {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// The broker refused the key pair (`forbidden.`, 401): a configuration error, not a
    /// verdict on the order. Nothing is failed; a human fixes the keys.
    #[error("broker credentials rejected: {0}")]
    CredentialsRejected(String),
    /// The quantity to close is held by the symbol's open orders (Alpaca's 403
    /// "insufficient qty available"): cancel them, or a human decides.
    #[error("{held_qty} held by open orders: {message}")]
    BlockedByOpenOrders { held_qty: Quantity, message: String },
    /// The circuit breaker is open: the broker is left alone until `retry_after`.
    #[error("broker unreachable; left alone for {retry_after:?}")]
    Unavailable { retry_after: Duration },
    /// closeflow holds no key pair for this account: nothing can be sent, ever, until one
    /// is configured.
    #[error("no broker credentials for account {0}")]
    NoCredentials(AccountId),
}

impl BrokerError {
    /// "Not now": the work is delayed (message released, lookup skipped), never failed,
    /// abandoned or counted against the close.
    pub fn is_try_later(&self) -> bool {
        matches!(
            self,
            BrokerError::RateLimited { .. } | BrokerError::Unavailable { .. } | BrokerError::CredentialsRejected(_)
        )
    }

    /// How long to leave the broker alone, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BrokerError::RateLimited { retry_after } | BrokerError::Unavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The alert kind a delayed close carries while this lasts.
    pub fn trouble_kind(&self) -> Option<closeflow_domain::AlertKind> {
        match self {
            BrokerError::RateLimited { .. } => Some(closeflow_domain::trouble::RATE_LIMITED),
            BrokerError::Unavailable { .. } => Some(closeflow_domain::trouble::UNREACHABLE),
            BrokerError::CredentialsRejected(_) => Some(closeflow_domain::trouble::CREDENTIALS_REJECTED),
            _ => None,
        }
    }
}

/// The broker port. Every call names the account: each account may trade with its own
/// key pair, and rate limits and the circuit breaker are per key pair.
#[async_trait]
pub trait Broker: Send + Sync {
    /// The intent names its account.
    async fn submit_order(&self, intent: &OrderIntent) -> Result<BrokerOrder, BrokerError>;
    async fn get_order_by_client_id(&self, account: &AccountId, id: &ClientOrderId)
        -> Result<BrokerOrder, BrokerError>;
    async fn cancel_order(&self, account: &AccountId, broker_order_id: &str) -> Result<(), BrokerError>;
    async fn list_positions(&self, account: &AccountId) -> Result<Vec<BrokerPosition>, BrokerError>;
    /// The symbol's orders still working at the broker (whoever placed them).
    async fn open_orders(&self, account: &AccountId, symbol: &str) -> Result<Vec<OpenOrder>, BrokerError>;
    /// The account's equity (cash plus positions at market), what the drawdown guard
    /// measures.
    async fn account_equity(&self, account: &AccountId) -> Result<Decimal, BrokerError>;
    /// Every order still working at the broker for the account, in any symbol (whoever
    /// placed them), oldest first: what an emergency liquidation cancels.
    async fn account_open_orders(&self, account: &AccountId) -> Result<Vec<OpenOrder>, BrokerError>;

    /// Whether this adapter places multi-leg orders: a strategy close runs in `mleg` mode
    /// only then. Adapters that say so implement the two calls below.
    fn supports_mleg(&self) -> bool {
        false
    }

    /// Places one multi-leg order (the intent names its account and its client order id,
    /// which the broker refuses a second time like a single order's).
    async fn submit_mleg_order(&self, intent: &MlegIntent) -> Result<BrokerMlegOrder, BrokerError> {
        Err(BrokerError::Rejected(format!(
            "this broker places no multi-leg orders ({})",
            intent.client_order_id
        )))
    }

    /// A multi-leg order and its legs, found by its client order id.
    async fn get_mleg_order_by_client_id(
        &self,
        _account: &AccountId,
        _id: &ClientOrderId,
    ) -> Result<BrokerMlegOrder, BrokerError> {
        // An adapter that places none holds none.
        Err(BrokerError::NotFound)
    }
}
