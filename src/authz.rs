//! After authentication, authorization: what a route requires of the principal (scopes, roles,
//! ownership of the resource a path parameter names, a predicate), checked before the handler
//! and before any upgrade.
//!
//! This room holds the requirement and its evaluation; the surfaces (the layers, the extractors,
//! the WebSocket upgrade) decide *when* it runs, through the hand-off: as soon as the principal
//! is known.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use futures_util::FutureExt as _;
use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Uri};

use crate::error::{ConfigError, ConfigErrorKind};
use crate::guard::{Guard, Identity};
use crate::rejection::{AuthRejection, AuthRejectionKind};

/// A principal that holds OAuth-style scopes (RFC 6749 §3.3), for [`Require::scope`].
///
/// The crate implements it for the default JWT [`Claims`](crate::Claims) (its space-separated
/// `scope` claim) and for capability keys given scopes in configuration
/// ([`ScopedKey`](crate::ScopedKey)). Implement it for the application's own claims:
///
/// ```
/// use axum_keyguard::HasScopes;
///
/// #[derive(Clone, serde::Deserialize)]
/// struct MyClaims {
///     sub: String,
///     /// Azure-style: an array of scopes.
///     scp: Vec<String>,
/// }
///
/// impl HasScopes for MyClaims {
///     fn has_scope(&self, scope: &str) -> bool {
///         self.scp.iter().any(|s| s == scope)
///     }
/// }
/// ```
pub trait HasScopes {
    /// Whether the principal holds `scope` (compared exactly, case-sensitively).
    fn has_scope(&self, scope: &str) -> bool;
}

/// A principal that holds roles (an identity provider's `roles` claim, a key's configured roles),
/// for [`Require::role`].
///
/// ```
/// use axum_keyguard::HasRoles;
///
/// #[derive(Clone)]
/// struct User {
///     roles: Vec<String>,
/// }
///
/// impl HasRoles for User {
///     fn has_role(&self, role: &str) -> bool {
///         self.roles.iter().any(|r| r == role)
///     }
/// }
/// ```
pub trait HasRoles {
    /// Whether the principal holds `role` (compared exactly).
    fn has_role(&self, role: &str) -> bool;
}

/// A principal that owns resources named in the path, for [`Require::owns`]: a sandbox's key owns
/// its sandbox, and only it.
///
/// ```
/// use axum_keyguard::OwnsResource;
///
/// #[derive(Clone)]
/// enum Principal {
///     Sandbox { id: String },
///     Operator,
/// }
///
/// impl OwnsResource for Principal {
///     fn owns_resource(&self, param: &str, value: &str) -> bool {
///         match self {
///             Principal::Sandbox { id } => param == "id" && id == value,
///             // An operator's key reaches every sandbox.
///             Principal::Operator => true,
///         }
///     }
/// }
/// ```
pub trait OwnsResource {
    /// Whether the principal owns the resource named `value` by the path parameter `param` (the
    /// percent-decoded value axum matched for `{param}`).
    fn owns_resource(&self, param: &str, value: &str) -> bool;
}

/// `scope` is one of the space-separated scope-tokens of `claim` (RFC 6749 §3.3): what
/// [`HasScopes`] means for a `scope` claim.
///
/// ```
/// assert!(axum_keyguard::scope_claim_contains("read write", "write"));
/// assert!(!axum_keyguard::scope_claim_contains("read write", "rea"));
/// ```
#[must_use]
pub fn scope_claim_contains(claim: &str, scope: &str) -> bool {
    !scope.is_empty() && claim.split(' ').any(|token| token == scope)
}

#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
impl HasScopes for crate::Claims {
    /// The space-separated `scope` claim; no claim holds no scope.
    fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|claim| scope_claim_contains(claim, scope))
    }
}

impl HasScopes for crate::ScopedKey {
    /// The scopes configuration gave the key.
    fn has_scope(&self, scope: &str) -> bool {
        self.grants().scopes().any(|s| s == scope)
    }
}

impl HasRoles for crate::ScopedKey {
    /// The roles configuration gave the key.
    fn has_role(&self, role: &str) -> bool {
        self.grants().roles().any(|r| r == role)
    }
}

/// The request head a [predicate](Require::predicate) sees: the request's parts and the path
/// parameters axum matched.
pub struct RequestHead<'a> {
    parts: &'a Parts,
    params: Option<&'a RawPathParams>,
    /// A parameter was not UTF-8 once decoded (axum then has none to give).
    invalid_params: bool,
}

/// axum's matched path parameters, read once for every requirement of a request.
pub(crate) struct PathParams {
    params: Option<RawPathParams>,
    invalid: bool,
}

impl PathParams {
    /// Reads the parameters axum matched for the route (an extension: nothing waits).
    pub(crate) fn read(parts: &mut Parts) -> Self {
        match RawPathParams::from_request_parts(parts, &()).now_or_never() {
            Some(Ok(params)) => Self {
                params: Some(params),
                invalid: false,
            },
            Some(Err(
                axum::extract::rejection::RawPathParamsRejection::InvalidUtf8InPathParam(_),
            )) => Self {
                params: None,
                invalid: true,
            },
            _ => Self {
                params: None,
                invalid: false,
            },
        }
    }
}

impl<'a> RequestHead<'a> {
    pub(crate) fn new(parts: &'a Parts, params: &'a PathParams) -> Self {
        Self {
            parts,
            params: params.params.as_ref(),
            invalid_params: params.invalid,
        }
    }
}

impl<'a> RequestHead<'a> {
    /// The method.
    #[must_use]
    pub fn method(&self) -> &'a Method {
        &self.parts.method
    }

    /// The URI.
    #[must_use]
    pub fn uri(&self) -> &'a Uri {
        &self.parts.uri
    }

    /// The headers (the guard may already have removed the credential's).
    #[must_use]
    pub fn headers(&self) -> &'a HeaderMap {
        &self.parts.headers
    }

    /// The extensions (`ConnectInfo`, and whatever outer layers put there).
    #[must_use]
    pub fn extensions(&self) -> &'a Extensions {
        &self.parts.extensions
    }

    /// The percent-decoded value of the path parameter `name`, when the route has one.
    #[must_use]
    pub fn path_param(&self, name: &str) -> Option<&'a str> {
        self.params?
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value))
    }
}

impl fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", self.method())
            .field("path", &self.uri().path())
            .finish_non_exhaustive()
    }
}

type Predicate<P> = dyn Fn(&P, &RequestHead<'_>) -> bool + Send + Sync;

/// One piece of a scope: literal text or a path parameter (`sandbox:{id}`).
enum Piece {
    Text(Box<str>),
    Param(Box<str>),
}

/// A scope as declared, with its path parameters filled in at request time.
struct Template {
    pieces: Box<[Piece]>,
}

/// As declared: `"sandbox:{id}"`.
impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = String::new();
        for piece in &*self.pieces {
            match piece {
                Piece::Text(text) => written.push_str(text),
                Piece::Param(name) => {
                    written.push('{');
                    written.push_str(name);
                    written.push('}');
                }
            }
        }
        fmt::Debug::fmt(&written, f)
    }
}

enum Node<P> {
    /// Every one of these scopes.
    Scopes(Box<[Template]>, fn(&P, &str) -> bool),
    /// Every one of these roles.
    Roles(Box<[Box<str>]>, fn(&P, &str) -> bool),
    /// Owns the resource the parameter names.
    Owns(Box<str>, fn(&P, &str, &str) -> bool),
    Predicate(Box<Predicate<P>>),
    All(Box<[Arc<Node<P>>]>),
    Any(Box<[Arc<Node<P>>]>),
}

/// What a route requires of its principal, once authenticated: checked after the guard and before
/// the handler (and before a WebSocket upgrade); a principal that does not meet it gets `403` with
/// `WWW-Authenticate: Bearer realm="…", error="insufficient_scope", scope="…"` (the scopes the
/// requirement names, never the principal's) and a generic body.
///
/// Kinds: [scopes](Self::scope) (through [`HasScopes`]), [roles](Self::role) ([`HasRoles`]),
/// [ownership](Self::owns) of the resource a path parameter names ([`OwnsResource`]), and a
/// [predicate](Self::predicate) over the principal and the request head; they compose with
/// [`and`](Self::and) / [`all_of`](Self::all_of) and [`or`](Self::or) / [`any_of`](Self::any_of).
/// Declare it where the route is declared: [`GuardLayer::require`](crate::GuardLayer::require)
/// for a sub-router, or a [`RequireLayer`](crate::RequireLayer) per route. Cloning is cheap.
///
/// ```
/// use axum::{routing::get, Router};
/// use axum_keyguard::{Authenticated, Claims, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring, Require};
///
/// let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, [7u8; 32])?])?;
/// let guard = Guard::builder().with_verifier(Jwt::builder(keyring).build()?).build()?;
///
/// // A token for one sandbox, or for all of them.
/// let sandbox = Require::scope("sandbox:{id}")?.or(Require::scope("sandboxes:*")?);
/// let app: Router = Router::new()
///     .route("/api/sandboxes/{id}/logs", get(|Authenticated(c): Authenticated<Claims>| async move {
///         c.sub.unwrap_or_default()
///     }))
///     .route_layer(guard.layer().require(sandbox))
///     .route("/health", get(|| async { "ok" }));
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
///
/// A scope may name path parameters in braces (`sandbox:{id}`); at request time the parameter's
/// value is put in its place. A value that would make the scope fall outside the RFC 6749
/// `scope-token` grammar (a space, a quote, a backslash, a control character) matches nothing
/// and is left out of the challenge. A requirement that names a path parameter the route does not
/// have is a misconfiguration: `500`, with an error in the log. Put the layer on the routes with
/// `Router::route_layer`: `Router::layer` also covers the fallback, where no path was matched.
pub struct Require<P> {
    node: Arc<Node<P>>,
    /// Whether checking needs the request head (path parameters or a predicate).
    needs_head: bool,
    /// The path parameters the requirement names.
    params: Arc<[Box<str>]>,
}

impl<P> Clone for Require<P> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            needs_head: self.needs_head,
            params: Arc::clone(&self.params),
        }
    }
}

impl<P> fmt::Debug for Require<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.node, f)
    }
}

impl<P> fmt::Debug for Node<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scopes(scopes, _) => f.debug_tuple("Scopes").field(scopes).finish(),
            Self::Roles(roles, _) => f.debug_tuple("Roles").field(roles).finish(),
            Self::Owns(param, _) => f.debug_tuple("Owns").field(param).finish(),
            Self::Predicate(_) => f.write_str("Predicate(..)"),
            Self::All(nodes) => f.debug_tuple("AllOf").field(nodes).finish(),
            Self::Any(nodes) => f.debug_tuple("AnyOf").field(nodes).finish(),
        }
    }
}

fn invalid(detail: impl Into<String>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidRequirement, detail)
}

/// RFC 6749 §3.3 `NQCHAR`: `%x21 / %x23-5B / %x5D-7E`.
fn is_scope_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

fn is_param_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Template {
    fn parse(scope: &str) -> Result<Self, ConfigError> {
        let mut pieces = Vec::new();
        let mut rest = scope;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(start) => {
                    let (text, tail) = rest.split_at(start);
                    let end = tail
                        .find('}')
                        .ok_or_else(|| invalid("a scope has a `{` without its `}`"))?;
                    let name = &tail[1..end];
                    if !is_param_name(name) {
                        return Err(invalid(
                            "a scope's path parameter must be a name of letters, digits and `_`",
                        ));
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(text.into()));
                    }
                    pieces.push(Piece::Param(name.into()));
                    rest = &tail[end + 1..];
                }
                None => {
                    pieces.push(Piece::Text(rest.into()));
                    rest = "";
                }
            }
        }
        let text_ok = pieces.iter().all(|piece| match piece {
            Piece::Text(text) => text.bytes().all(is_scope_char) && !text.contains(['{', '}']),
            Piece::Param(_) => true,
        });
        if pieces.is_empty() || !text_ok {
            return Err(invalid(
                "a scope must be a non-empty RFC 6749 scope-token (printable ASCII, no space, \
                 quote or backslash)",
            ));
        }
        Ok(Self {
            pieces: pieces.into(),
        })
    }

    fn params(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Param(name) => Some(&**name),
            Piece::Text(_) => None,
        })
    }

    /// The scope for this request; `None` when a parameter's value is not scope-token text.
    fn render(&self, head: Option<&RequestHead<'_>>) -> Option<String> {
        let mut scope = String::new();
        for piece in &*self.pieces {
            match piece {
                Piece::Text(text) => scope.push_str(text),
                Piece::Param(name) => {
                    let value = head?.path_param(name)?;
                    if value.is_empty() || !value.bytes().all(is_scope_char) {
                        return None;
                    }
                    scope.push_str(value);
                }
            }
        }
        Some(scope)
    }

    /// The scope without parameters, borrowed (the common case: no allocation to check it).
    fn literal(&self) -> Option<&str> {
        match &*self.pieces {
            [Piece::Text(text)] => Some(text),
            _ => None,
        }
    }
}

impl<P> Require<P> {
    fn leaf(node: Node<P>, needs_head: bool, params: Vec<Box<str>>) -> Self {
        Self {
            node: Arc::new(node),
            needs_head,
            params: params.into(),
        }
    }

    /// The principal must hold `scope` ([`HasScopes`]). The scope may name path parameters in
    /// braces (`sandbox:{id}`). Fails on an empty scope or one outside the `scope-token` grammar.
    ///
    /// ```
    /// use axum_keyguard::{Claims, Require};
    ///
    /// let read = Require::<Claims>::scope("tools:read")?;
    /// assert!(Require::<Claims>::scope("two words").is_err());
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn scope(scope: impl AsRef<str>) -> Result<Self, ConfigError>
    where
        P: HasScopes,
    {
        Self::scopes([scope])
    }

    /// The principal must hold every one of `scopes`. Fails when there are none.
    ///
    /// ```
    /// use axum_keyguard::{Claims, Require};
    ///
    /// let both = Require::<Claims>::scopes(["tools:read", "tools:write"])?;
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn scopes<I, S>(scopes: I) -> Result<Self, ConfigError>
    where
        P: HasScopes,
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let templates = scopes
            .into_iter()
            .map(|s| Template::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if templates.is_empty() {
            return Err(invalid("a scope requirement needs at least one scope"));
        }
        let params: Vec<Box<str>> = templates
            .iter()
            .flat_map(Template::params)
            .map(Into::into)
            .collect();
        let needs_head = !params.is_empty();
        Ok(Self::leaf(
            Node::Scopes(templates.into(), P::has_scope),
            needs_head,
            params,
        ))
    }

    /// The principal must hold `role` ([`HasRoles`]). Fails on an empty role.
    ///
    /// ```
    /// use axum_keyguard::{Require, ScopedKey};
    ///
    /// let admin = Require::<ScopedKey>::role("admin")?;
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn role(role: impl AsRef<str>) -> Result<Self, ConfigError>
    where
        P: HasRoles,
    {
        Self::roles([role])
    }

    /// The principal must hold every one of `roles`. Fails when there are none, or one is empty.
    ///
    /// ```
    /// use axum_keyguard::{Require, ScopedKey};
    ///
    /// let both = Require::<ScopedKey>::roles(["operator", "auditor"])?;
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn roles<I, S>(roles: I) -> Result<Self, ConfigError>
    where
        P: HasRoles,
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let roles: Vec<Box<str>> = roles.into_iter().map(|r| r.as_ref().into()).collect();
        if roles.is_empty() || roles.iter().any(|r| r.is_empty()) {
            return Err(invalid("a role requirement needs non-empty roles"));
        }
        Ok(Self::leaf(
            Node::Roles(roles.into(), P::has_role),
            false,
            Vec::new(),
        ))
    }

    /// The principal must own the resource named by the path parameter `param`
    /// ([`OwnsResource`]): `Require::owns("id")` on `/sandboxes/{id}/…`. Fails on a name that is
    /// not letters, digits and `_`.
    ///
    /// ```
    /// use axum_keyguard::{OwnsResource, Require};
    ///
    /// #[derive(Clone)]
    /// struct Sandbox(String);
    ///
    /// impl OwnsResource for Sandbox {
    ///     fn owns_resource(&self, param: &str, value: &str) -> bool {
    ///         param == "id" && self.0 == value
    ///     }
    /// }
    ///
    /// let own = Require::<Sandbox>::owns("id")?;
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn owns(param: impl AsRef<str>) -> Result<Self, ConfigError>
    where
        P: OwnsResource,
    {
        let param = param.as_ref();
        if !is_param_name(param) {
            return Err(invalid(
                "a path parameter name must be letters, digits and `_`",
            ));
        }
        Ok(Self::leaf(
            Node::Owns(param.into(), P::owns_resource),
            true,
            vec![param.into()],
        ))
    }

    /// The principal and the request head must satisfy `predicate`, for everything else (a
    /// tenant header that must match the principal's tenant, a method only some may use).
    ///
    /// ```
    /// use axum_keyguard::{Claims, Require};
    ///
    /// let reads_only = Require::<Claims>::predicate(|_claims, head| head.method() == http::Method::GET);
    /// ```
    pub fn predicate<F>(predicate: F) -> Self
    where
        F: Fn(&P, &RequestHead<'_>) -> bool + Send + Sync + 'static,
    {
        Self::leaf(Node::Predicate(Box::new(predicate)), true, Vec::new())
    }

    fn combine(requirements: Vec<Self>, any: bool) -> Result<Self, ConfigError> {
        if requirements.is_empty() {
            return Err(invalid("all_of and any_of need at least one requirement"));
        }
        let needs_head = requirements.iter().any(|r| r.needs_head);
        let params: Vec<Box<str>> = requirements
            .iter()
            .flat_map(|r| r.params.iter().cloned())
            .collect();
        let nodes: Box<[Arc<Node<P>>]> = requirements.into_iter().map(|r| r.node).collect();
        let node = if any {
            Node::Any(nodes)
        } else {
            Node::All(nodes)
        };
        Ok(Self::leaf(node, needs_head, params))
    }

    /// Every one of `requirements`. Fails when there are none (an empty "all of" would let
    /// everyone in).
    ///
    /// ```
    /// use axum_keyguard::{Require, ScopedKey};
    ///
    /// let both = Require::<ScopedKey>::all_of([Require::scope("deploy")?, Require::role("operator")?])?;
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn all_of(requirements: impl IntoIterator<Item = Self>) -> Result<Self, ConfigError> {
        Self::combine(requirements.into_iter().collect(), false)
    }

    /// At least one of `requirements`. Fails when there are none.
    ///
    /// ```
    /// use axum_keyguard::{Require, ScopedKey};
    ///
    /// let either = Require::<ScopedKey>::any_of([Require::scope("deploy")?, Require::role("admin")?])?;
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn any_of(requirements: impl IntoIterator<Item = Self>) -> Result<Self, ConfigError> {
        Self::combine(requirements.into_iter().collect(), true)
    }

    /// This and `other`.
    ///
    /// ```
    /// use axum_keyguard::{Require, ScopedKey};
    ///
    /// let both = Require::<ScopedKey>::scope("deploy")?.and(Require::role("operator")?);
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    #[must_use]
    pub fn and(self, other: Self) -> Self {
        let params = self
            .params
            .iter()
            .chain(other.params.iter())
            .cloned()
            .collect::<Vec<_>>();
        let needs_head = self.needs_head || other.needs_head;
        Self::leaf(
            Node::All(Box::new([self.node, other.node])),
            needs_head,
            params,
        )
    }

    /// This or `other`.
    ///
    /// ```
    /// use axum_keyguard::{Require, ScopedKey};
    ///
    /// let either = Require::<ScopedKey>::scope("deploy")?.or(Require::role("admin")?);
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    #[must_use]
    pub fn or(self, other: Self) -> Self {
        let params = self
            .params
            .iter()
            .chain(other.params.iter())
            .cloned()
            .collect::<Vec<_>>();
        let needs_head = self.needs_head || other.needs_head;
        Self::leaf(
            Node::Any(Box::new([self.node, other.node])),
            needs_head,
            params,
        )
    }

    /// Whether checking needs the request head.
    pub(crate) fn needs_head(&self) -> bool {
        self.needs_head
    }
}

impl<P> Node<P> {
    fn holds(&self, principal: &P, head: Option<&RequestHead<'_>>) -> bool {
        match self {
            Self::Scopes(scopes, has) => scopes.iter().all(|t| match t.literal() {
                Some(scope) => has(principal, scope),
                None => t.render(head).is_some_and(|scope| has(principal, &scope)),
            }),
            Self::Roles(roles, has) => roles.iter().all(|role| has(principal, role)),
            Self::Owns(param, owns) => head
                .and_then(|h| h.path_param(param))
                .is_some_and(|value| owns(principal, param, value)),
            Self::Predicate(predicate) => head.is_some_and(|h| predicate(principal, h)),
            Self::All(nodes) => nodes.iter().all(|n| n.holds(principal, head)),
            Self::Any(nodes) => nodes.iter().any(|n| n.holds(principal, head)),
        }
    }

    /// Every scope the requirement names, filled in for this request, in order, once each.
    fn scopes(&self, head: Option<&RequestHead<'_>>, out: &mut Vec<String>) {
        match self {
            Self::Scopes(scopes, _) => {
                for scope in scopes.iter().filter_map(|t| t.render(head)) {
                    if !out.contains(&scope) {
                        out.push(scope);
                    }
                }
            }
            Self::All(nodes) | Self::Any(nodes) => {
                for node in &**nodes {
                    node.scopes(head, out);
                }
            }
            Self::Roles(..) | Self::Owns(..) | Self::Predicate(_) => {}
        }
    }
}

/// Why a requirement refused.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Not met: `403`, with the scopes the requirement names (space-separated; may be empty).
    Forbidden(String),
    /// A path parameter the route does not have: `500`.
    Misconfigured,
}

impl<P> Require<P> {
    /// Checks `principal`. `head` is needed when [`needs_head`](Self::needs_head); without it
    /// such a requirement fails closed (`500`), and so does one naming a path parameter the
    /// route does not have.
    pub(crate) fn check(
        &self,
        principal: &P,
        head: Option<&RequestHead<'_>>,
    ) -> Result<(), Refused> {
        if self.needs_head {
            let Some(head) = head else {
                return Err(Refused::Misconfigured);
            };
            if !head.invalid_params {
                if let Some(missing) = self.params.iter().find(|n| head.path_param(n).is_none()) {
                    tracing::error!(
                        target: "axum_keyguard::rejection",
                        param = &**missing,
                        "a requirement names a path parameter this route does not have: put \
                         the layer on the route with `Router::route_layer`"
                    );
                    return Err(Refused::Misconfigured);
                }
            }
        }
        let head = head.filter(|_| self.needs_head);
        if self.node.holds(principal, head) {
            Ok(())
        } else {
            Err(Refused::Forbidden(self.scope_list(head)))
        }
    }

    fn scope_list(&self, head: Option<&RequestHead<'_>>) -> String {
        let mut scopes = Vec::new();
        self.node.scopes(head, &mut scopes);
        scopes.join(" ")
    }
}

/// Checks every requirement in `requirements` for `identity`: the first refusal becomes the
/// guard's rejection (`403 insufficient_scope` with the scopes that requirement names, or `500`).
pub(crate) fn authorize<'r, P>(
    guard: &Guard<P>,
    identity: &Identity<P>,
    requirements: impl IntoIterator<Item = &'r Require<P>>,
    head: Option<&RequestHead<'_>>,
) -> Result<(), AuthRejection>
where
    P: Clone + Send + Sync + 'static,
{
    for requirement in requirements {
        match requirement.check(identity.principal(), head) {
            Ok(()) => {}
            Err(Refused::Forbidden(scopes)) => {
                return Err(guard
                    .reject(
                        AuthRejectionKind::InsufficientScope,
                        Some(identity.source()),
                    )
                    .with_scope(&scopes))
            }
            Err(Refused::Misconfigured) => {
                return Err(guard.reject(AuthRejectionKind::Misconfigured, Some(identity.source())))
            }
        }
    }
    Ok(())
}

/// The requirements declared for a request, in its extensions: those a
/// [`RequireLayer`](crate::RequireLayer) left before any guard ran (checked by the guard as soon
/// as it knows the principal), and, on WebSocket upgrades, every requirement the request met (the
/// socket checks them again when its record changes).
pub(crate) struct Declared<P> {
    pub(crate) list: Vec<Require<P>>,
    /// Set once a guard took the requirements over; a `RequireLayer` that ran before any guard
    /// fails the response closed when nothing did.
    pub(crate) taken: Option<Arc<AtomicBool>>,
}

impl<P> Clone for Declared<P> {
    fn clone(&self) -> Self {
        Self {
            list: self.list.clone(),
            taken: self.taken.clone(),
        }
    }
}

impl<P> Declared<P> {
    /// Marks the requirements as taken over by a guard.
    pub(crate) fn take_over(&self) {
        if let Some(taken) = &self.taken {
            taken.store(true, Ordering::Release);
        }
    }
}

/// Adds `requirement` to the request's requirements.
pub(crate) fn record<P>(extensions: &mut Extensions, requirement: &Require<P>)
where
    P: Send + Sync + 'static,
{
    match extensions.get_mut::<Declared<P>>() {
        Some(declared) => declared.list.push(requirement.clone()),
        None => {
            extensions.insert(Declared {
                list: vec![requirement.clone()],
                taken: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Who {
        scopes: &'static str,
        roles: &'static [&'static str],
        sandbox: &'static str,
    }

    impl HasScopes for Who {
        fn has_scope(&self, scope: &str) -> bool {
            scope_claim_contains(self.scopes, scope)
        }
    }

    impl HasRoles for Who {
        fn has_role(&self, role: &str) -> bool {
            self.roles.contains(&role)
        }
    }

    impl OwnsResource for Who {
        fn owns_resource(&self, param: &str, value: &str) -> bool {
            param == "id" && self.sandbox == value
        }
    }

    const ALICE: Who = Who {
        scopes: "read write sandbox:7",
        roles: &["admin"],
        sandbox: "7",
    };

    fn refused(r: &Require<Who>, who: &Who) -> Option<String> {
        match r.check(who, None) {
            Ok(()) => None,
            Err(Refused::Forbidden(scopes)) => Some(scopes),
            Err(Refused::Misconfigured) => Some("<500>".into()),
        }
    }

    #[test]
    fn scopes_roles_and_composition_without_a_head() {
        let read = Require::scope("read").expect("scope");
        let deploy = Require::scope("deploy").expect("scope");
        let admin = Require::role("admin").expect("role");
        let ops = Require::role("ops").expect("role");
        assert_eq!(refused(&read, &ALICE), None);
        assert_eq!(refused(&deploy, &ALICE).as_deref(), Some("deploy"));
        assert_eq!(refused(&admin, &ALICE), None);
        assert_eq!(refused(&ops, &ALICE).as_deref(), Some(""));
        let both = Require::scopes(["read", "deploy"]).expect("scopes");
        assert_eq!(refused(&both, &ALICE).as_deref(), Some("read deploy"));
        assert_eq!(refused(&read.clone().and(admin.clone()), &ALICE), None);
        assert!(refused(&read.clone().and(ops.clone()), &ALICE).is_some());
        assert_eq!(refused(&deploy.clone().or(admin.clone()), &ALICE), None);
        let neither = Require::any_of([deploy.clone(), ops.clone(), deploy.clone()]).expect("any");
        assert_eq!(refused(&neither, &ALICE).as_deref(), Some("deploy"));
        // A prefix or a different case is another scope.
        assert!(refused(&Require::scope("rea").expect("scope"), &ALICE).is_some());
        assert!(refused(&Require::scope("READ").expect("scope"), &ALICE).is_some());
    }

    #[test]
    fn requirements_that_could_never_be_checked_are_config_errors() {
        let kind = |r: Result<Require<Who>, ConfigError>| r.map(|_| ()).unwrap_err().kind();
        let k = ConfigErrorKind::InvalidRequirement;
        assert_eq!(kind(Require::scope("")), k);
        assert_eq!(kind(Require::scope("a b")), k);
        assert_eq!(kind(Require::scope("say\"hi")), k);
        assert_eq!(kind(Require::scope("back\\slash")), k);
        assert_eq!(kind(Require::scope("sandbox:{id")), k);
        assert_eq!(kind(Require::scope("sandbox:{}")), k);
        assert_eq!(kind(Require::scope("sandbox:{a-b}")), k);
        assert_eq!(kind(Require::scopes(Vec::<&str>::new())), k);
        assert_eq!(kind(Require::role("")), k);
        assert_eq!(kind(Require::owns("")), k);
        assert_eq!(kind(Require::owns("a/b")), k);
        assert_eq!(kind(Require::all_of([])), k);
        assert_eq!(kind(Require::any_of([])), k);
        assert!(Require::<Who>::scope("sandbox:{id}").is_ok());
    }

    #[test]
    fn requirements_on_the_path_read_its_parameters_and_fail_closed_without_them() {
        let own = Require::<Who>::owns("id").expect("owns");
        assert!(matches!(
            own.check(&ALICE, None),
            Err(Refused::Misconfigured)
        ));
        let sandbox = Require::<Who>::scope("sandbox:{id}").expect("scope");
        // No matched parameters at all (a `.layer()` instead of a `.route_layer()`).
        let (mut parts, ()) = http::Request::get("/sandboxes/7")
            .body(())
            .expect("request")
            .into_parts();
        let params = PathParams::read(&mut parts);
        let head = RequestHead::new(&parts, &params);
        assert!(matches!(
            own.check(&ALICE, Some(&head)),
            Err(Refused::Misconfigured)
        ));
        assert!(matches!(
            sandbox.check(&ALICE, Some(&head)),
            Err(Refused::Misconfigured)
        ));
    }

    #[cfg(feature = "jwt")]
    #[test]
    fn claims_scope_is_space_separated() {
        let mut claims = crate::Claims::default();
        assert!(!claims.has_scope("read"));
        claims.scope = Some("read  write".into());
        assert!(claims.has_scope("read") && claims.has_scope("write"));
        assert!(!claims.has_scope("") && !claims.has_scope("read write"));
    }
}
