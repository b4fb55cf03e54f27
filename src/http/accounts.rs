//! Built-in accounts over HTTP (admin): what `clawrelay user …` does, for
//! an admin console or a script. A password is generated unless one is
//! given, and shown only in the answer that set it.

use super::auth::AdminAuth;
use super::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use crate::app::AppState;
use crate::error::{Error, ErrorResponse};
use crate::ids::AppId;
use crate::relay::sessions::{generate_password, AccountInfo};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts", post(create).get(list))
        .route("/accounts/{name}", patch(update))
        .route("/accounts/{name}/password", post(reset_password))
}

fn app_id(raw: &str) -> Result<AppId, Error> {
    AppId::parse_any(raw)
        .ok_or_else(|| Error::not_found("app_not_found", format!("no active app {raw}")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateBody {
    app_id: String,
    /// The login name, also the user id its messages carry (unique).
    name: String,
    /// 8 characters to 256 bytes; generated (and answered once) when absent.
    password: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Created {
    #[serde(flatten)]
    #[schema(inline)]
    account: AccountInfo,
    /// The generated password: shown only here (absent when one was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

/// Creates a built-in account of an app (a login for the web chat).
#[utoipa::path(post, path = "/accounts", tag = "admin", security(("bearer" = [])), request_body = CreateBody, responses(
    (status = 201, body = Created),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 413, body = ErrorResponse),
    (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn create(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Created>), Error> {
    let app = app_id(&body.app_id)?;
    let generated = body.password.is_none().then(generate_password);
    let password = body
        .password
        .or_else(|| generated.clone())
        .unwrap_or_default();
    let account = state
        .relay
        .create_account(&app, &body.name, password)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            account,
            password: generated,
        }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(rename_all = "camelCase")]
pub(crate) struct ListQuery {
    /// Only this app's accounts.
    app_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Accounts {
    accounts: Vec<AccountInfo>,
}

/// Lists built-in accounts (of one app with `appId`), by name; never their
/// passwords.
#[utoipa::path(get, path = "/accounts", tag = "admin", security(("bearer" = [])), params(ListQuery), responses(
    (status = 200, body = Accounts),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Accounts>, Error> {
    let app = q.app_id.as_deref().map(app_id).transpose()?;
    Ok(Json(Accounts {
        accounts: state.relay.accounts(app.as_ref()).await?,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct UpdateBody {
    /// `true`: the account cannot log in and its sessions end; `false`:
    /// it may log in again.
    disabled: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Done {
    ok: bool,
}

/// Disables or enables an account.
#[utoipa::path(patch, path = "/accounts/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "The account's name")), request_body = UpdateBody, responses(
    (status = 200, body = Done),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn update(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Done>, Error> {
    state
        .relay
        .set_account_disabled(&name, body.disabled)
        .await?;
    Ok(Json(Done { ok: true }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub(crate) struct PasswordBody {
    /// 8 characters to 256 bytes; generated (and answered once) when absent.
    password: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PasswordSet {
    name: String,
    /// The generated password: shown only here (absent when one was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

/// Sets a new password (generated unless given); the account's sessions end.
/// The body may be left out.
#[utoipa::path(post, path = "/accounts/{name}/password", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "The account's name")), request_body = Option<PasswordBody>, responses(
    (status = 200, body = PasswordSet),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn reset_password(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(name): ApiPath<String>,
    OptionalJson(body): OptionalJson<PasswordBody>,
) -> Result<Json<PasswordSet>, Error> {
    let given = body.password;
    let generated = given.is_none().then(generate_password);
    let password = given.or_else(|| generated.clone()).unwrap_or_default();
    state.relay.set_account_password(&name, password).await?;
    Ok(Json(PasswordSet {
        name,
        password: generated,
    }))
}
