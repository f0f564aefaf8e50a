//! JWT access and refresh tokens (HS256), validated strictly.
//!
//! The algorithm is pinned to HS256; `exp`, `iat`, `sub`, `sid`, `jti`, `typ` and `iss` are all
//! required and checked: `exp` exactly, by the service's clock; `iat` with a small leeway for
//! clock skew. A valid signature is not enough:
//! the session named by `sid` is checked on every request by the service layer.
//!
//! Every token names the key that signed it in its `kid` header: [`KID_LEN`] base64url
//! characters of a MAC of a fixed label under the key, so the name is stable across restarts
//! and says nothing about the key. The current key signs; the previous one, during a rotation,
//! only verifies. Verification uses the key the `kid` names and no other, so a token with no
//! `kid`, an unknown one, one of the wrong shape, or one naming a key that did not sign it is
//! refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{SessionId, Timestamp, TokenId, UserId};

/// Seconds of clock skew tolerated on `iat`. (`jsonwebtoken` also allows it on `exp` against the
/// system clock; the exact check against the service's clock comes after.)
pub const LEEWAY_SECONDS: i64 = 5;
/// Tokens longer than this are rejected before any parsing.
const MAX_TOKEN_LEN: usize = 4096;
/// Length of a `kid`: 12 bytes of MAC in base64url (96 bits: no two keys share a name).
pub const KID_LEN: usize = 16;

/// The `kid` of a (derived) signing key: a MAC of a fixed label under it, so it names the key
/// without revealing anything of it.
pub fn key_id(key: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(b"lighttech/jwt-key-id");
    URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..KID_LEN * 3 / 4])
}

/// The header's `kid`, found in the decoded header without parsing it (this runs on every
/// request, and `jsonwebtoken` parses and checks the whole header with the signature anyway):
/// the first `"kid":"…"`, which must be [`KID_LEN`] base64url characters. It only picks the
/// key to verify with, so a header written some other way is refused, never misread into
/// accepting anything.
fn header_kid(token: &str) -> Result<KidBuf, TokenError> {
    const NEEDLE: &[u8] = br#""kid":""#;
    let encoded = token.split('.').next().unwrap_or_default();
    let mut json = [0u8; MAX_HEADER_LEN];
    let len = URL_SAFE_NO_PAD
        .decode_slice(encoded, &mut json)
        .map_err(|_| TokenError::Claim("header"))?;
    let json = &json[..len];
    let Some(at) = json.windows(NEEDLE.len()).position(|w| w == NEEDLE) else {
        return Err(if json.windows(5).any(|w| w == br#""kid""#) {
            TokenError::MalformedKeyId
        } else {
            TokenError::NoKeyId
        });
    };
    let rest = &json[at + NEEDLE.len()..];
    match (rest.get(..KID_LEN), rest.get(KID_LEN)) {
        (Some(kid), Some(b'"')) if well_formed_kid(kid) => {
            let mut buf = [0u8; KID_LEN];
            buf.copy_from_slice(kid);
            Ok(KidBuf(buf))
        }
        _ => Err(TokenError::MalformedKeyId),
    }
}

/// Longest header read for its `kid` (the headers issued here are about 70 bytes).
const MAX_HEADER_LEN: usize = 512;

/// A well-formed `kid`, copied out of the header.
struct KidBuf([u8; KID_LEN]);

impl KidBuf {
    fn names(&self, key: &NamedKey) -> bool {
        self.0 == *key.kid.as_bytes()
    }
}

fn well_formed_kid(kid: &[u8]) -> bool {
    kid.len() == KID_LEN
        && kid
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

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
    /// The user it was issued to (`sub`).
    pub user: UserId,
    /// The session it belongs to (`sid`), checked live on every use.
    pub session: SessionId,
    /// The token's own id (`jti`); a refresh token's must be its session's current one.
    pub id: TokenId,
    /// When it expires (`exp`), to the second.
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
    /// Longer than 4,096 bytes: refused before it is parsed.
    #[error("token too long")]
    TooLong,
    /// The header names no key.
    #[error("no kid")]
    NoKeyId,
    /// The header's `kid` is not of the shape this service issues.
    #[error("malformed kid")]
    MalformedKeyId,
    /// The `kid` names neither the current nor the previous key (perhaps a newer one: the
    /// caller may re-read its keys and try again).
    #[error("unknown kid")]
    UnknownKeyId,
}

struct NamedKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl NamedKey {
    fn new(key: &[u8]) -> Self {
        Self {
            kid: key_id(key),
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
        }
    }
}

/// Issues tokens with the current key and verifies them with the key their `kid` names: the
/// current one or the previous one.
pub struct TokenService {
    current: NamedKey,
    previous: Option<NamedKey>,
    validation: Validation,
    issuer: String,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.issuer)
            .field("kid", &self.current.kid)
            .field("previous_kid", &self.previous.as_ref().map(|k| &k.kid))
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// Builds the service from a derived signing key alone.
    pub fn new(key: &[u8], issuer: &str) -> Self {
        Self::with_previous(key, None, issuer)
    }

    /// Builds the service from the current derived key, which signs, and the previous one,
    /// which still verifies (ignored when it is the current one).
    pub fn with_previous(current: &[u8], previous: Option<&[u8]>, issuer: &str) -> Self {
        super::hs256::install();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.set_issuer(&[issuer]);
        validation.leeway = LEEWAY_SECONDS as u64;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        Self {
            current: NamedKey::new(current),
            previous: previous.filter(|p| *p != current).map(NamedKey::new),
            validation,
            issuer: issuer.to_owned(),
        }
    }

    /// The `kid` of the key that signs.
    pub fn key_id(&self) -> &str {
        &self.current.kid
    }

    /// The `kid` of the key that only verifies, if any.
    pub fn previous_key_id(&self) -> Option<&str> {
        self.previous.as_ref().map(|k| k.kid.as_str())
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
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.current.encoding)
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
        let kid = header_kid(token)?;
        let key = if kid.names(&self.current) {
            &self.current
        } else {
            match &self.previous {
                Some(previous) if kid.names(previous) => previous,
                _ => return Err(TokenError::UnknownKeyId),
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)?;
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

    /// A token of `typ` issued at `at` for ten minutes, with its fresh ids.
    fn issued(typ: TokenType, at: Timestamp) -> (String, (UserId, SessionId, TokenId)) {
        let (u, s, t) = ids();
        let token = service().issue(typ, u, s, t, at, 600).unwrap();
        (token, (u, s, t))
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

    /// Whether an access token with these claims, signed with the right key, is refused.
    fn refused_as_access(claims: serde_json::Value, now: Timestamp) -> bool {
        let token = forge(&header(KEY), claims, KEY);
        service().verify(&token, TokenType::Access, now).is_err()
    }

    fn header(key: &[u8]) -> String {
        format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, key_id(key))
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
        let (token, ids) = issued(TokenType::Access, now);
        let v = service().verify(&token, TokenType::Access, now).unwrap();
        assert_eq!((v.user, v.session, v.id), ids);
    }

    #[test]
    fn a_refresh_token_is_not_an_access_token_and_the_reverse() {
        let now = Timestamp::now();
        let (refresh, _) = issued(TokenType::Refresh, now);
        assert!(matches!(
            service().verify(&refresh, TokenType::Access, now),
            Err(TokenError::WrongType)
        ));
        let (access, _) = issued(TokenType::Access, now);
        assert!(service().verify(&access, TokenType::Refresh, now).is_err());
    }

    #[test]
    fn a_token_is_refused_from_its_exp_on_by_the_given_clock() {
        let at = Timestamp::from_millis(Timestamp::now().unix_seconds() * 1000);
        let (token, _) = issued(TokenType::Refresh, at);
        let exp = at.plus_seconds(600);
        let at = |ms: i64| service().verify(&token, TokenType::Refresh, Timestamp::from_millis(ms));
        assert!(at(exp.millis() - 1).is_ok());
        assert!(matches!(at(exp.millis()), Err(TokenError::Expired)));
        assert!(matches!(at(exp.millis() + 1000), Err(TokenError::Expired)));
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let past = Timestamp::now().plus_seconds(-3600);
        let (token, _) = issued(TokenType::Access, past);
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
        let good = forge(&header(KEY), claims.clone(), KEY);
        assert!(service().verify(&good, TokenType::Access, now).is_ok());

        let other_key = forge(
            &header(KEY),
            claims.clone(),
            b"another-key-another-key-another-k",
        );
        assert!(
            service()
                .verify(&other_key, TokenType::Access, now)
                .is_err()
        );

        let hs512 = forge(&header(KEY).replace("HS256", "HS512"), claims.clone(), KEY);
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
        assert!(refused_as_access(wrong_iss, now));
    }

    #[test]
    fn every_required_claim_must_be_present_and_well_formed() {
        let now = Timestamp::now();
        for missing in ["sub", "sid", "jti", "typ", "iat", "exp", "iss"] {
            let mut claims = claims_json(now);
            claims.as_object_mut().unwrap().remove(missing);
            assert!(refused_as_access(claims, now), "accepted without {missing}");
        }
        let mut bad_sub = claims_json(now);
        bad_sub["sub"] = "42".into();
        assert!(refused_as_access(bad_sub, now));
    }

    #[test]
    fn a_token_issued_in_the_future_is_rejected() {
        let now = Timestamp::now();
        let mut claims = claims_json(now);
        claims["iat"] = (now.unix_seconds() + 3600).into();
        claims["exp"] = (now.unix_seconds() + 7200).into();
        assert!(refused_as_access(claims, now));
    }

    #[test]
    fn garbage_never_panics() {
        let now = Timestamp::now();
        for junk in ["", ".", "..", "a.b.c", "ey.ey.ey", &"x".repeat(5000)] {
            assert!(service().verify(junk, TokenType::Access, now).is_err());
        }
    }

    const OLD: &[u8] = b"an-older-key-an-older-key-an-older-key";

    fn kid_of(token: &str) -> String {
        jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
    }

    #[test]
    fn every_token_names_its_key_stably_and_without_revealing_it() {
        let now = Timestamp::now();
        let (u, s, t) = ids();
        for typ in [TokenType::Access, TokenType::Refresh] {
            let token = service().issue(typ, u, s, t, now, 600).unwrap();
            let kid = kid_of(&token);
            assert_eq!(kid.len(), KID_LEN);
            assert!(well_formed_kid(kid.as_bytes()), "{kid}");
            assert_eq!(kid, service().key_id(), "the same key, the same name");
        }
        assert_ne!(key_id(KEY), key_id(OLD));
        let kid = key_id(KEY);
        assert!(!URL_SAFE_NO_PAD.encode(KEY).contains(&kid));
        assert!(!String::from_utf8_lossy(KEY).contains(&kid));
    }

    #[test]
    fn the_previous_key_verifies_but_never_signs() {
        let now = Timestamp::now();
        let (u, s, t) = ids();
        let old = TokenService::new(OLD, "lighttech")
            .issue(TokenType::Refresh, u, s, t, now, 600)
            .unwrap();
        let rotated = TokenService::with_previous(KEY, Some(OLD), "lighttech");
        assert_eq!(rotated.previous_key_id(), Some(key_id(OLD).as_str()));
        let v = rotated.verify(&old, TokenType::Refresh, now).unwrap();
        assert_eq!((v.user, v.session, v.id), (u, s, t));
        let new = rotated
            .issue(TokenType::Refresh, u, s, t, now, 600)
            .unwrap();
        assert_eq!(kid_of(&new), key_id(KEY));
        assert!(rotated.verify(&new, TokenType::Refresh, now).is_ok());
        // Rotated again: the oldest key is retired.
        let retired = TokenService::with_previous(
            b"a-newer-key-a-newer-key-a-newer-key",
            Some(KEY),
            "lighttech",
        );
        assert!(matches!(
            retired.verify(&old, TokenType::Refresh, now),
            Err(TokenError::UnknownKeyId)
        ));
        assert!(retired.verify(&new, TokenType::Refresh, now).is_ok());
        // A previous key equal to the current one is no second key.
        assert_eq!(
            TokenService::with_previous(KEY, Some(KEY), "lighttech").previous_key_id(),
            None
        );
    }

    #[test]
    fn a_missing_unknown_malformed_or_mismatched_kid_is_refused() {
        let now = Timestamp::now();
        let rotated = TokenService::with_previous(KEY, Some(OLD), "lighttech");
        let claims = claims_json(now);
        let with_kid = |kid: &str, key: &[u8]| {
            forge(
                &format!(
                    r#"{{"alg":"HS256","typ":"JWT","kid":{}}}"#,
                    serde_json::json!(kid)
                ),
                claims.clone(),
                key,
            )
        };
        assert!(
            rotated
                .verify(&with_kid(&key_id(KEY), KEY), TokenType::Access, now)
                .is_ok()
        );
        assert!(
            rotated
                .verify(&with_kid(&key_id(OLD), OLD), TokenType::Access, now)
                .is_ok()
        );
        let no_kid = forge(r#"{"alg":"HS256","typ":"JWT"}"#, claims.clone(), KEY);
        assert!(matches!(
            rotated.verify(&no_kid, TokenType::Access, now),
            Err(TokenError::NoKeyId)
        ));
        let unknown = key_id(b"someone-else-someone-else-someone-else");
        assert!(matches!(
            rotated.verify(&with_kid(&unknown, KEY), TokenType::Access, now),
            Err(TokenError::UnknownKeyId)
        ));
        let current = key_id(KEY);
        for bad in [
            String::new(),
            current[..KID_LEN - 1].to_owned(),
            format!("{current}A"),
            format!("{}+", &current[..KID_LEN - 1]),
            format!("{}=", &current[..KID_LEN - 1]),
            current
                .replace(|_: char| true, "é")
                .chars()
                .take(8)
                .collect(),
        ] {
            assert!(
                matches!(
                    rotated.verify(&with_kid(&bad, KEY), TokenType::Access, now),
                    Err(TokenError::MalformedKeyId)
                ),
                "{bad:?}"
            );
        }
        // A header longer than any issued here is refused before it is looked into.
        let long = with_kid(&"A".repeat(1000), KEY);
        assert!(rotated.verify(&long, TokenType::Access, now).is_err());
        let numeric = forge(
            r#"{"alg":"HS256","typ":"JWT","kid":42}"#,
            claims.clone(),
            KEY,
        );
        assert!(rotated.verify(&numeric, TokenType::Access, now).is_err());
        // Naming the previous key, signed by the current one (and the reverse).
        assert!(matches!(
            rotated.verify(&with_kid(&key_id(OLD), KEY), TokenType::Access, now),
            Err(TokenError::Jwt(_))
        ));
        assert!(matches!(
            rotated.verify(&with_kid(&key_id(KEY), OLD), TokenType::Access, now),
            Err(TokenError::Jwt(_))
        ));
    }
}
