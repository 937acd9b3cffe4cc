//! Who may act on which account: the caller's accounts, checked inside the same decision
//! (and, on DynamoDB, the same conditional write) as the action itself.

use std::collections::BTreeSet;

use crate::ids::AccountId;

/// At most this many accounts per caller: DynamoDB's `IN` takes 100 operands.
pub const MAX_ACCOUNTS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every account (operators, the embedded stack's development token).
    All,
    Accounts(BTreeSet<AccountId>),
}

impl Access {
    pub fn allows(&self, account: &AccountId) -> bool {
        match self {
            Access::All => true,
            Access::Accounts(set) => set.contains(account),
        }
    }

    /// Parses `acct1,acct2` (or `*` for all accounts); also API Gateway's rendering of a
    /// JSON array claim, `[acct1 acct2]`.
    pub fn parse(list: &str) -> Result<Access, String> {
        let list = list.trim();
        if list == "*" {
            return Ok(Access::All);
        }
        let inner = list.strip_prefix('[').and_then(|l| l.strip_suffix(']')).unwrap_or(list);
        let accounts = inner
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(|s| s.trim_matches('"'))
            .filter(|s| !s.is_empty())
            .map(|s| AccountId::parse(s).map_err(|e| e.to_string()))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if accounts.is_empty() {
            return Err("no accounts".into());
        }
        if accounts.len() > MAX_ACCOUNTS {
            return Err(format!("more than {MAX_ACCOUNTS} accounts"));
        }
        Ok(Access::Accounts(accounts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_lists_parse_in_every_form_a_claim_arrives_in() {
        let a = |s: &str| AccountId::parse(s).unwrap();
        let acc = Access::parse("acct-1, acct-2").unwrap();
        assert!(acc.allows(&a("acct-1")) && acc.allows(&a("acct-2")) && !acc.allows(&a("acct-3")));
        assert_eq!(Access::parse("[acct-1 acct-2]").unwrap(), acc);
        assert_eq!(Access::parse(r#"["acct-1","acct-2"]"#).unwrap(), acc);
        assert_eq!(Access::parse("*").unwrap(), Access::All);
        assert!(Access::parse("").is_err());
        assert!(Access::parse("bad/acct").is_err());
    }
}
