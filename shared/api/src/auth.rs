//! Who the caller is. In AWS, API Gateway's JWT authorizer verifies the token and the
//! Lambda entry point hands the claims over as [`JwtClaims`]; the caller's accounts come from
//! one claim (default `accounts`). The embedded stack uses bearer tokens from `API_TOKENS`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{Extensions, HeaderMap, StatusCode};
use closeflow_domain::Access;

use crate::error::ApiError;

#[derive(Debug, Clone, Default)]
pub struct JwtClaims(pub HashMap<String, String>);

#[derive(Debug, Clone)]
pub enum Auth {
    Jwt { claim: String },
    Tokens(Arc<HashMap<String, Grant>>),
}

/// What a bearer token grants, and the name it signs changes with in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub access: Access,
}

/// Who is calling: the accounts they may act on and the name their changes are audited
/// under (the JWT's `sub`, or the API token's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub access: Access,
    pub actor: String,
}

/// The audit name of a token given without one.
pub const UNNAMED_TOKEN: &str = "api-token";

/// `API_TOKENS` syntax: `[name:]token=acct1,acct2` entries separated by `;` (`*` = all
/// accounts). The name (letters, digits, `-`, `_`, `.`) is who the audit trail says acted.
pub fn parse_api_tokens(spec: &str) -> Result<HashMap<String, Grant>, String> {
    let mut out = HashMap::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (token, accounts) = entry
            .split_once('=')
            .ok_or_else(|| "API_TOKENS entries look like [name:]token=acct1,acct2".to_string())?;
        let (name, token) = match token.trim().split_once(':') {
            Some((name, token)) => (name.trim(), token.trim()),
            None => (UNNAMED_TOKEN, token.trim()),
        };
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if name.is_empty() || name.len() > 64 || !name.chars().all(name_ok) {
            return Err("API_TOKENS: a token name is 1 to 64 letters, digits, '-', '_' or '.'".into());
        }
        if token.len() < 8 {
            return Err("API_TOKENS: tokens must be at least 8 characters".into());
        }
        out.insert(
            token.to_string(),
            Grant {
                name: name.to_string(),
                access: Access::parse(accounts).map_err(|e| format!("API_TOKENS: {e}"))?,
            },
        );
    }
    if out.is_empty() {
        return Err("API_TOKENS: no tokens".into());
    }
    Ok(out)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

pub fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "The caller may not act on this position's account",
    )
}

/// The accounts the caller may act on, or 401.
pub fn caller(auth: &Auth, headers: &HeaderMap, ext: &Extensions) -> Result<Access, ApiError> {
    signed_in(auth, headers, ext).map(|c| c.access)
}

/// The caller's accounts and audit name, or 401.
pub fn signed_in(auth: &Auth, headers: &HeaderMap, ext: &Extensions) -> Result<Caller, ApiError> {
    match auth {
        Auth::Jwt { claim } => {
            let claims = ext
                .get::<JwtClaims>()
                .ok_or_else(|| unauthorized("No verified caller identity"))?;
            let value = claims
                .0
                .get(claim)
                .ok_or_else(|| unauthorized("The token carries no accounts claim"))?;
            let access = Access::parse(value).map_err(|e| unauthorized(&format!("Unreadable accounts claim: {e}")))?;
            // Every issuer sets `sub`; without it the change is still audited, as a JWT caller.
            let actor = claims
                .0
                .get("sub")
                .map(|s| format!("user:{s}"))
                .unwrap_or_else(|| "user".into());
            Ok(Caller { access, actor })
        }
        Auth::Tokens(tokens) => {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| unauthorized("An Authorization: Bearer token is required"))?;
            tokens
                .get(token.trim())
                .map(|g| Caller {
                    access: g.access.clone(),
                    actor: g.name.clone(),
                })
                .ok_or_else(|| unauthorized("Unknown token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_weak_or_malformed_specs_are_refused() {
        let t = parse_api_tokens("dev-token-1=acct-1,acct-2; ops:ops-token-9=*").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t["ops-token-9"].access, Access::All);
        assert_eq!(t["ops-token-9"].name, "ops");
        assert_eq!(t["dev-token-1"].name, UNNAMED_TOKEN);
        assert!(parse_api_tokens("bad name:dev-token-1=*").is_err());
        assert!(parse_api_tokens("short=acct").is_err());
        assert!(parse_api_tokens("no-equals-sign").is_err());
        assert!(parse_api_tokens("").is_err());
    }

    #[test]
    fn jwt_callers_come_from_the_claim_and_nothing_else() {
        let auth = Auth::Jwt {
            claim: "accounts".into(),
        };
        let mut ext = Extensions::new();
        assert!(caller(&auth, &HeaderMap::new(), &ext).is_err());
        ext.insert(JwtClaims(HashMap::from([(
            "accounts".into(),
            "[acct-1 acct-2]".into(),
        )])));
        let c = signed_in(&auth, &HeaderMap::new(), &ext).unwrap();
        assert_eq!(c.actor, "user", "no `sub` claim");
        let acc = c.access;
        assert!(acc.allows(&closeflow_domain::AccountId::parse("acct-2").unwrap()));
        // A bearer header means nothing when API Gateway is the authority.
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer anything".parse().unwrap());
        assert!(caller(&auth, &h, &Extensions::new()).is_err());
    }
}
