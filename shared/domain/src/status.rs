//! Position and close request statuses (seed 000 §1, §10).

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} status `{value}`")]
pub struct UnknownStatus {
    pub what: &'static str,
    pub value: String,
}

macro_rules! status_enum {
    ($name:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Result<Self, UnknownStatus> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownStatus { what: $what, value: other.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(PositionStatus, "position", {
    Open => "open",
    Closing => "closing",
    Closed => "closed",
    CloseRetryable => "close_retryable",
    CloseFailed => "close_failed",
});

status_enum!(CloseRequestStatus, "close request", {
    Pending => "pending",
    Submitted => "submitted",
    Completed => "completed",
    Retryable => "retryable",
    Failed => "failed",
});

impl CloseRequestStatus {
    /// Still driving orders at the broker (seed 000 §9: "exactly one active close request").
    pub fn is_in_flight(&self) -> bool {
        matches!(self, CloseRequestStatus::Pending | CloseRequestStatus::Submitted)
    }

    /// Nothing will move it again without a human or the reconciler starting a new attempt.
    pub fn is_terminal(&self) -> bool {
        matches!(self, CloseRequestStatus::Completed | CloseRequestStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_wire_names() {
        let names: Vec<_> = PositionStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["open", "closing", "closed", "close_retryable", "close_failed"]);
        let names: Vec<_> = CloseRequestStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["pending", "submitted", "completed", "retryable", "failed"]);
        for s in PositionStatus::ALL {
            assert_eq!(PositionStatus::parse(s.as_str()).unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for s in CloseRequestStatus::ALL {
            assert_eq!(CloseRequestStatus::parse(s.as_str()).unwrap(), *s);
        }
        assert!(PositionStatus::parse("OPEN").is_err());
    }
}
