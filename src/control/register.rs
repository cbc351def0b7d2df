//! `POST /machine/register` inside the Noise channel.

use http::{Response, StatusCode};

use super::Control;
use crate::counters::{self, Registration};
use crate::detached::run_to_end;
use crate::log_rate::{LogRate, PERIOD};
use crate::mapper::TAGGED_DEVICES_USER_ID;
use crate::response::{json, text, Body};
use crate::state::{NodeEntry, RegisterError, RegisterOutcome};
use crate::tailcfg::{MachineKey, RegisterLogin, RegisterRequest, RegisterResponse, RegisterUser};

/// Refused registrations, logged at most once per period: anyone with a machine key can ask.
static REFUSED: LogRate = LogRate::new(PERIOD);

/// Answers a registration request from `machine_key`.
pub async fn handle(ctrl: &Control, machine_key: MachineKey, body: &[u8]) -> Response<Body> {
    let req: RegisterRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid RegisterRequest: {e}")),
    };
    let node_key = req.node_key;
    // A registration that writes runs to its end even if the client resets its stream, so its
    // write and its publish go together. A follow-up only waits for the admin (who writes), and
    // stops when its client goes: nothing is left waiting for nobody.
    let outcome = if req.followup.is_empty() {
        let state = ctrl.state.clone();
        run_to_end(async move { state.register(machine_key, req).await })
            .await
            .unwrap_or_else(|| Err(RegisterError::ShuttingDown))
    } else {
        ctrl.state.register(machine_key, req).await
    };
    counters::registered(match &outcome {
        Ok(RegisterOutcome::Authorized(_)) => Registration::Authorized,
        Ok(RegisterOutcome::NeedsAuth(_)) => Registration::NeedsAuth,
        Ok(RegisterOutcome::LoggedOut(_)) => Registration::LoggedOut,
        Err(RegisterError::Internal(_)) => Registration::Failed,
        Err(_) => Registration::Refused,
    });
    match outcome {
        Ok(RegisterOutcome::Authorized(entry)) => {
            tracing::info!(node = entry.node.id, name = %entry.node.given_name, "node registered");
            json(StatusCode::OK, &response_for(ctrl, &entry, true))
        }
        Ok(RegisterOutcome::NeedsAuth(url)) => {
            tracing::info!(%machine_key, url, "registration waits for approval");
            json(StatusCode::OK, &RegisterResponse { auth_url: url, ..Default::default() })
        }
        Ok(RegisterOutcome::LoggedOut(entry)) => {
            tracing::info!(%node_key, "node logged out");
            let mut resp = entry.map(|e| response_for(ctrl, &e, false)).unwrap_or_default();
            resp.node_key_expired = true;
            json(StatusCode::OK, &resp)
        }
        Err(RegisterError::Internal(e)) => {
            tracing::error!(%machine_key, error = %e, "registration failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "registration failed; see the server log")
        }
        Err(e) => {
            if let Some(left_out) = REFUSED.allow() {
                tracing::info!(%machine_key, %node_key, reason = %e, left_out, "registration refused");
            }
            json(StatusCode::OK, &RegisterResponse::error(e.to_string()))
        }
    }
}

fn response_for(ctrl: &Control, entry: &NodeEntry, authorized: bool) -> RegisterResponse {
    let snap = ctrl.state.snapshot();
    let (id, login, display) = match entry.node.user_id.and_then(|u| snap.user(u).cloned()) {
        Some(u) => (u.id, u.login_name(), u.shown_name().to_string()),
        None => (TAGGED_DEVICES_USER_ID, "tagged-devices".to_string(), "Tagged Devices".to_string()),
    };
    RegisterResponse {
        user: RegisterUser { id, display_name: display.clone() },
        login: RegisterLogin { id, provider: String::new(), login_name: login, display_name: display },
        node_key_expired: entry.is_expired(chrono::Utc::now()),
        machine_authorized: authorized,
        auth_url: String::new(),
        error: String::new(),
    }
}
