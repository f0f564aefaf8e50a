//! The component schemas: request bodies, the problem+json error, and the responses' views
//! (which `utoipa::ToSchema` takes from the response types).

use super::*;

/// The body of `POST /api/auth/v1/register/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RegisterRequest {
    /// 3–150 characters of `A-Z a-z 0-9 @ . + - _`; unique case-insensitively.
    #[schema(
        min_length = 3,
        max_length = 150,
        pattern = r"^[A-Za-z0-9@.+_-]+$",
        example = "alice"
    )]
    username: String,
    /// A valid address, unique case-insensitively; stored lower-cased. Uniqueness compares
    /// Unicode case folding with compatibility normalisation (`ß` matches `ss`, `ſ` and
    /// fullwidth `ｓ` match `s`), and that folded form may have at most 254 characters.
    #[schema(format = Email, max_length = 254, example = "alice@example.com")]
    email: String,
    /// 8–128 characters; not entirely numeric, not too similar to the username or email, not a
    /// commonly used password.
    #[schema(min_length = 8, max_length = 128, example = "Correct-Horse-Battery-9")]
    password: String,
}

/// The body of `POST /api/auth/v1/login/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LoginRequest {
    /// Matched case-insensitively.
    #[schema(example = "alice")]
    username: String,
    /// At most 4,096 characters.
    #[schema(example = "Correct-Horse-Battery-9")]
    password: String,
}

/// The body of `POST /api/auth/v1/token/refresh/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RefreshRequest {
    /// The current refresh token of the session.
    refresh: String,
}

/// The body of `POST /api/auth/v1/logout/`, which may be omitted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LogoutRequest {
    /// If given, it must be a refresh token of the session being closed.
    refresh: Option<String>,
}

/// The body of `POST /api/balance/v1/deposit/` and `POST /api/balance/v1/withdraw/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MoneyRequest {
    amount: AmountInput,
    /// Free text, at most 255 characters.
    #[schema(max_length = 255, example = "salary")]
    description: Option<String>,
}

/// The body of `POST /api/balance/v1/transfer/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TransferRequest {
    /// The recipient's username (case-insensitive).
    #[schema(min_length = 1, max_length = 150, example = "bob")]
    to: String,
    amount: AmountInput,
    /// Free text, at most 255 characters; both sides see it.
    #[schema(max_length = 255, example = "rent")]
    description: Option<String>,
}

/// An amount on input: a decimal string or a JSON number with at most two fraction digits,
/// more than 0 and at most 1000000000.00, parsed exactly (never through binary floating point).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub struct AmountInput(serde_json::Value);

/// Strings from 0.01 to 1000000000.00 with at most two fraction digits (leading zeros allowed).
pub(super) const AMOUNT_PATTERN: &str =
    r"^(0*[1-9][0-9]{0,8}(\.[0-9]{1,2})?|0*1000000000(\.0{1,2})?|0+\.(0[1-9]|[1-9][0-9]?))$";

impl PartialSchema for AmountInput {
    fn schema() -> RefOr<Schema> {
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(AMOUNT_PATTERN))
            .examples([json!("10.50")]);
        let number = ObjectBuilder::new()
            .schema_type(Type::Number)
            .exclusive_minimum(Some(0))
            .maximum(Some(1_000_000_000))
            .multiple_of(Some(0.01))
            .examples([json!(10.5)]);
        OneOfBuilder::new()
            .item(text)
            .item(number)
            .description(Some(
                "A decimal string or a JSON number with at most two fraction digits, more than \
                 0 and at most 1000000000.00; exponents, NaN and Infinity are refused.",
            ))
            .into()
    }
}

impl ToSchema for AmountInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AmountInput")
    }
}

/// Every error code (docs/api.md, Error codes).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ErrorCode {
    InvalidJson,
    ValidationError,
    NotAuthenticated,
    InvalidToken,
    TokenReused,
    InvalidCredentials,
    Forbidden,
    NotFound,
    RecipientNotFound,
    MethodNotAllowed,
    UsernameTaken,
    EmailTaken,
    PayloadTooLarge,
    UnsupportedMediaType,
    InsufficientFunds,
    SelfTransfer,
    BalanceLimitExceeded,
    IdempotencyKeyMismatch,
    SelfDeactivation,
    RateLimited,
    InternalError,
    ServiceUnavailable,
}

/// An RFC 9457 problem.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    kind: String,
    /// A short human-readable summary, the same for every error with this `code`.
    #[schema(example = "Insufficient funds")]
    title: String,
    /// The HTTP status of the response.
    #[schema(example = 422)]
    status: u16,
    /// One sentence for a person about this occurrence; branch on `code`, not on this.
    #[schema(example = "Balance 10.00 is less than 25.00")]
    detail: String,
    /// The machine-readable error code: the member to branch on.
    code: ErrorCode,
    /// Only for `validation_error`: field name → messages.
    #[schema(value_type = Option<BTreeMap<String, Vec<String>>>)]
    errors: Option<BTreeMap<String, Vec<String>>>,
}

pub(super) fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

pub(super) fn page_schema(item: &str) -> Schema {
    ObjectBuilder::new()
        .property("results", ArrayBuilder::new().items(schema_ref(item)))
        .required("results")
        .property(
            "next_cursor",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .pattern(Some("^[A-Za-z0-9_-]+$"))
                .description(Some("Cursor of the next page, or null on the last page.")),
        )
        .required("next_cursor")
        .into()
}

pub(super) fn add<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

pub(super) fn components() -> utoipa::openapi::Components {
    let mut schemas = Vec::new();
    add::<RegisterRequest>(&mut schemas);
    add::<LoginRequest>(&mut schemas);
    add::<RefreshRequest>(&mut schemas);
    add::<LogoutRequest>(&mut schemas);
    add::<MoneyRequest>(&mut schemas);
    add::<TransferRequest>(&mut schemas);
    add::<AmountInput>(&mut schemas);
    add::<ErrorCode>(&mut schemas);
    add::<Problem>(&mut schemas);
    add::<RegisteredView>(&mut schemas);
    add::<LoginView>(&mut schemas);
    add::<RefreshView>(&mut schemas);
    add::<MeView>(&mut schemas);
    add::<SessionView>(&mut schemas);
    add::<BalanceView>(&mut schemas);
    add::<OperationView>(&mut schemas);
    add::<CounterpartyView>(&mut schemas);
    add::<OperationKind>(&mut schemas);
    add::<HealthView>(&mut schemas);
    add::<AdminUserView>(&mut schemas);
    add::<AuditView>(&mut schemas);
    add::<PartyView>(&mut schemas);
    schemas.push((
        "SessionList".into(),
        ObjectBuilder::new()
            .property(
                "results",
                ArrayBuilder::new().items(schema_ref("SessionView")),
            )
            .required("results")
            .into(),
    ));
    schemas.push(("OperationPage".into(), page_schema("OperationView").into()));
    schemas.push(("AdminUserPage".into(), page_schema("AdminUserView").into()));
    schemas.push(("AuditPage".into(), page_schema("AuditView").into()));
    schemas.push((
        "EmptyObject".into(),
        ObjectBuilder::new()
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::<Schema>::FreeForm(false),
            ))
            .description(Some("An empty JSON object; the body may also be omitted."))
            .into(),
    ));
    let mut builder = ComponentsBuilder::new().schemas_from_iter(schemas);
    builder = builder.security_scheme(
        "bearerAuth",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An access token from `login/` or `token/refresh/` (HS256 JWT).",
                ))
                .build(),
        ),
    );
    builder.build()
}
