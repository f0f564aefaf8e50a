//! What each route looks like in the document: tag, summary, access, body, parameters and
//! the error codes beyond the common ones.
//!
//! Plain constant data, written beside each route in the route table ([`super::routes`]); the
//! OpenAPI module turns it into the document.

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Public,
    User,
    Staff,
}

/// What one route looks like in the document.
#[derive(Debug)]
pub(crate) struct RouteDoc {
    pub(crate) tag: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) description: &'static str,
    pub(crate) access: Access,
    /// Request body schema name, and whether it is required.
    pub(crate) body: Option<(&'static str, bool)>,
    pub(crate) success: u16,
    pub(crate) success_description: &'static str,
    /// What the success response's body is.
    pub(crate) success_body: Body,
    /// Codes beyond the ones every operation (or every authenticated/body operation) may give.
    pub(crate) errors: &'static [&'static str],
    pub(crate) params: &'static [Param],
}

#[derive(Debug)]
pub(crate) enum Body {
    /// `application/json` described by one of the document's component schemas.
    Schema(&'static str),
    /// `application/json`: an object of a shape this document does not describe (the OpenAPI
    /// document itself).
    JsonObject,
    /// A file served as it is, in one of these media types (which one the `Content-Type` says).
    Raw(&'static [&'static str]),
    None,
}

/// A route's parameters; the OpenAPI module gives each its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    /// A path parameter: name and description.
    Path(&'static str, &'static str),
    /// A history page's query (`limit`, `cursor`, `type`, `since`, `until`) and its
    /// `If-None-Match`; the page is cached, so it carries `ETag` and `X-Cache`.
    History,
    /// An admin page's `limit` and `cursor`, and with `search` its `q`.
    Page { search: bool },
    /// The `Idempotency-Key` header of a money movement, whose replay says
    /// `Idempotent-Replayed`.
    IdempotencyKey,
}

/// A route answering `200 OK` with no body, no request body, no parameters and only the common
/// error codes; the builder methods below say what differs.
pub(crate) const fn doc(
    tag: &'static str,
    access: Access,
    summary: &'static str,
    description: &'static str,
) -> RouteDoc {
    RouteDoc {
        tag,
        summary,
        description,
        access,
        body: None,
        success: 200,
        success_description: "OK",
        success_body: Body::None,
        errors: &[],
        params: &[],
    }
}

impl RouteDoc {
    /// A required JSON request body with this schema.
    pub(crate) const fn body(mut self, schema: &'static str) -> Self {
        self.body = Some((schema, true));
        self
    }

    /// An optional JSON request body with this schema.
    pub(crate) const fn optional_body(mut self, schema: &'static str) -> Self {
        self.body = Some((schema, false));
        self
    }

    /// The success status and its description.
    pub(crate) const fn success(mut self, status: u16, description: &'static str) -> Self {
        self.success = status;
        self.success_description = description;
        self
    }

    /// The success response's body.
    pub(crate) const fn returns(mut self, body: Body) -> Self {
        self.success_body = body;
        self
    }

    /// The error codes beyond the common ones.
    pub(crate) const fn errors(mut self, codes: &'static [&'static str]) -> Self {
        self.errors = codes;
        self
    }

    /// The parameters, in the document's order.
    pub(crate) const fn params(mut self, params: &'static [Param]) -> Self {
        self.params = params;
        self
    }

    /// A money movement: a required `request` body, `201` with the operation, and an
    /// `Idempotency-Key`.
    pub(crate) const fn moves_money(
        self,
        request: &'static str,
        success_description: &'static str,
    ) -> Self {
        self.body(request)
            .success(201, success_description)
            .returns(Body::Schema("OperationView"))
            .params(&[Param::IdempotencyKey])
    }

    /// Whether the success carries `Idempotent-Replayed`.
    pub(crate) fn idempotent_money(&self) -> bool {
        self.params.contains(&Param::IdempotencyKey)
    }

    /// Whether the success is a cached history page (`ETag`, `X-Cache`, `304`).
    pub(crate) fn cached_history(&self) -> bool {
        self.params.contains(&Param::History)
    }
}
