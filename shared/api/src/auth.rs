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
    Tokens(Arc<HashMap<String, Access>>),
}

/// `API_TOKENS` syntax: `token=acct1,acct2` entries separated by `;` (`*` = all accounts).
pub fn parse_api_tokens(spec: &str) -> Result<HashMap<String, Access>, String> {
    let mut out = HashMap::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (token, accounts) = entry
            .split_once('=')
            .ok_or_else(|| "API_TOKENS entries look like token=acct1,acct2".to_string())?;
        let token = token.trim();
        if token.len() < 8 {
            return Err("API_TOKENS: tokens must be at least 8 characters".into());
        }
        out.insert(
            token.to_string(),
            Access::parse(accounts).map_err(|e| format!("API_TOKENS: {e}"))?,
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
    match auth {
        Auth::Jwt { claim } => {
            let claims = ext
                .get::<JwtClaims>()
                .ok_or_else(|| unauthorized("No verified caller identity"))?;
            let value = claims
                .0
                .get(claim)
                .ok_or_else(|| unauthorized("The token carries no accounts claim"))?;
            Access::parse(value).map_err(|e| unauthorized(&format!("Unreadable accounts claim: {e}")))
        }
        Auth::Tokens(tokens) => {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| unauthorized("An Authorization: Bearer token is required"))?;
            tokens
                .get(token.trim())
                .cloned()
                .ok_or_else(|| unauthorized("Unknown token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_weak_or_malformed_specs_are_refused() {
        let t = parse_api_tokens("dev-token-1=acct-1,acct-2; ops-token-9=*").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t["ops-token-9"], Access::All);
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
        let acc = caller(&auth, &HeaderMap::new(), &ext).unwrap();
        assert!(acc.allows(&closeflow_domain::AccountId::parse("acct-2").unwrap()));
        // A bearer header means nothing when API Gateway is the authority.
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer anything".parse().unwrap());
        assert!(caller(&auth, &h, &Extensions::new()).is_err());
    }
}
