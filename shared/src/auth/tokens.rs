//! JWT access and refresh tokens (HS256), validated strictly.
//!
//! The algorithm is pinned to HS256; `exp`, `iat`, `sub`, `sid`, `jti`, `typ` and `iss` are all
//! required and checked: `exp` exactly, by the service's clock; `iat` with a small leeway for
//! clock skew. A valid signature is not enough:
//! the session named by `sid` is checked on every request by the service layer.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::{SessionId, Timestamp, TokenId, UserId};

/// Seconds of clock skew tolerated on `iat`. (`jsonwebtoken` also allows it on `exp` against the
/// system clock; the exact check against the service's clock comes after.)
pub const LEEWAY_SECONDS: i64 = 5;
/// Tokens longer than this are rejected before any parsing.
const MAX_TOKEN_LEN: usize = 4096;

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    /// Short-lived, sent as `Authorization: Bearer`.
    Access,
    /// Long-lived, single use, exchanged at `token/refresh/`.
    Refresh,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    jti: String,
    typ: TokenType,
    iat: i64,
    exp: i64,
    iss: String,
}

/// The checked contents of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `sub`.
    pub user: UserId,
    /// `sid`.
    pub session: SessionId,
    /// `jti`.
    pub id: TokenId,
    /// `exp`.
    pub expires_at: Timestamp,
}

/// Why a token was refused (only logged; clients always see `invalid_token`).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signature, algorithm, structure, `exp` or `iss` failed `jsonwebtoken`'s checks.
    #[error("jwt rejected: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// A claim is missing its expected shape.
    #[error("claim {0} is malformed")]
    Claim(&'static str),
    /// Access presented where refresh was expected or the reverse.
    #[error("wrong token type")]
    WrongType,
    /// `iat` lies in the future.
    #[error("issued in the future")]
    IssuedInFuture,
    /// `exp` has come, by the service's clock.
    #[error("expired")]
    Expired,
    /// Oversized input.
    #[error("token too long")]
    TooLong,
}

/// Issues and verifies tokens with one key.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// Builds the service from a derived signing key.
    pub fn new(key: &[u8], issuer: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.set_issuer(&[issuer]);
        validation.leeway = LEEWAY_SECONDS as u64;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            issuer: issuer.to_owned(),
        }
    }

    /// Signs a token.
    pub fn issue(
        &self,
        typ: TokenType,
        user: UserId,
        session: SessionId,
        id: TokenId,
        now: Timestamp,
        ttl_seconds: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: user.to_string(),
            sid: session.to_string(),
            jti: id.to_string(),
            typ,
            iat: now.unix_seconds(),
            exp: now.unix_seconds() + ttl_seconds,
            iss: self.issuer.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies signature, algorithm, claims and type.
    pub fn verify(
        &self,
        token: &str,
        expected: TokenType,
        now: Timestamp,
    ) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        let claims = data.claims;
        if claims.typ != expected {
            return Err(TokenError::WrongType);
        }
        if claims.iat > now.unix_seconds() + LEEWAY_SECONDS {
            return Err(TokenError::IssuedInFuture);
        }
        // A token is not accepted on or after its `exp` (RFC 7519), with no leeway: the
        // servers that issue tokens are the ones that check them, and the session's end (its
        // maximum lifetime included) is exact.
        if now.millis() >= claims.exp.saturating_mul(1000) {
            return Err(TokenError::Expired);
        }
        Ok(VerifiedToken {
            user: UserId::parse(&claims.sub).ok_or(TokenError::Claim("sub"))?,
            session: SessionId::parse(&claims.sid).ok_or(TokenError::Claim("sid"))?,
            id: TokenId::parse(&claims.jti).ok_or(TokenError::Claim("jti"))?,
            expires_at: Timestamp::from_millis(claims.exp.saturating_mul(1000)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn service() -> TokenService {
        TokenService::new(KEY, "lighttech")
    }

    fn ids() -> (UserId, SessionId, TokenId) {
        (UserId::new(), SessionId::new(), TokenId::new())
    }

    fn forge(header: &str, claims: serde_json::Value, key: &[u8]) -> String {
        use hmac::{KeyInit, Mac};
        let h = URL_SAFE_NO_PAD.encode(header);
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{h}.{c}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{h}.{c}.{sig}")
    }

    fn claims_json(now: Timestamp) -> serde_json::Value {
        let (u, s, t) = ids();
        serde_json::json!({
            "sub": u.to_string(), "sid": s.to_string(), "jti": t.to_string(), "typ": "access",
            "iat": now.unix_seconds(), "exp": now.unix_seconds() + 600, "iss": "lighttech"
        })
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let now = Timestamp::now();
        let (u, s, t) = ids();
        let token = service()
            .issue(TokenType::Access, u, s, t, now, 600)
            .unwrap();
        let v = service().verify(&token, TokenType::Access, now).unwrap();
        assert_eq!((v.user, v.session, v.id), (u, s, t));
    }

    #[test]
    fn a_refresh_token_is_not_an_access_token_and_the_reverse() {
        let now = Timestamp::now();
        let (u, s, t) = ids();
        let refresh = service()
            .issue(TokenType::Refresh, u, s, t, now, 600)
            .unwrap();
        assert!(matches!(
            service().verify(&refresh, TokenType::Access, now),
            Err(TokenError::WrongType)
        ));
        let access = service()
            .issue(TokenType::Access, u, s, t, now, 600)
            .unwrap();
        assert!(service().verify(&access, TokenType::Refresh, now).is_err());
    }

    #[test]
    fn a_token_is_refused_from_its_exp_on_by_the_given_clock() {
        let issued = Timestamp::from_millis(Timestamp::now().unix_seconds() * 1000);
        let (u, s, t) = ids();
        let token = service()
            .issue(TokenType::Refresh, u, s, t, issued, 600)
            .unwrap();
        let exp = issued.plus_seconds(600);
        let at = |ms: i64| service().verify(&token, TokenType::Refresh, Timestamp::from_millis(ms));
        assert!(at(exp.millis() - 1).is_ok());
        assert!(matches!(at(exp.millis()), Err(TokenError::Expired)));
        assert!(matches!(at(exp.millis() + 1000), Err(TokenError::Expired)));
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let past = Timestamp::now().plus_seconds(-3600);
        let (u, s, t) = ids();
        let token = service()
            .issue(TokenType::Access, u, s, t, past, 600)
            .unwrap();
        assert!(
            service()
                .verify(&token, TokenType::Access, Timestamp::now())
                .is_err()
        );
    }

    #[test]
    fn another_key_another_issuer_or_alg_none_is_rejected() {
        let now = Timestamp::now();
        let claims = claims_json(now);
        let good = forge(r#"{"alg":"HS256","typ":"JWT"}"#, claims.clone(), KEY);
        assert!(service().verify(&good, TokenType::Access, now).is_ok());

        let other_key = forge(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            claims.clone(),
            b"another-key-another-key-another-k",
        );
        assert!(
            service()
                .verify(&other_key, TokenType::Access, now)
                .is_err()
        );

        let hs512 = forge(r#"{"alg":"HS512","typ":"JWT"}"#, claims.clone(), KEY);
        assert!(service().verify(&hs512, TokenType::Access, now).is_err());

        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert!(
            service()
                .verify(&format!("{h}.{c}."), TokenType::Access, now)
                .is_err()
        );

        let mut wrong_iss = claims.clone();
        wrong_iss["iss"] = "someone-else".into();
        let t = forge(r#"{"alg":"HS256","typ":"JWT"}"#, wrong_iss, KEY);
        assert!(service().verify(&t, TokenType::Access, now).is_err());
    }

    #[test]
    fn every_required_claim_must_be_present_and_well_formed() {
        let now = Timestamp::now();
        for missing in ["sub", "sid", "jti", "typ", "iat", "exp", "iss"] {
            let mut claims = claims_json(now);
            claims.as_object_mut().unwrap().remove(missing);
            let t = forge(r#"{"alg":"HS256","typ":"JWT"}"#, claims, KEY);
            assert!(
                service().verify(&t, TokenType::Access, now).is_err(),
                "accepted without {missing}"
            );
        }
        let mut bad_sub = claims_json(now);
        bad_sub["sub"] = "42".into();
        let t = forge(r#"{"alg":"HS256","typ":"JWT"}"#, bad_sub, KEY);
        assert!(service().verify(&t, TokenType::Access, now).is_err());
    }

    #[test]
    fn a_token_issued_in_the_future_is_rejected() {
        let now = Timestamp::now();
        let mut claims = claims_json(now);
        claims["iat"] = (now.unix_seconds() + 3600).into();
        claims["exp"] = (now.unix_seconds() + 7200).into();
        let t = forge(r#"{"alg":"HS256","typ":"JWT"}"#, claims, KEY);
        assert!(service().verify(&t, TokenType::Access, now).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let now = Timestamp::now();
        for junk in ["", ".", "..", "a.b.c", "ey.ey.ey", &"x".repeat(5000)] {
            assert!(service().verify(junk, TokenType::Access, now).is_err());
        }
    }
}
