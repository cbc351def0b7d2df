//! `HeadscaleService` backed by [`State`]: every method of the service, for users, pre-auth
//! keys, API keys, nodes (with their tags, routes and addresses), interactive registrations,
//! the policy, debug nodes and health.

use std::sync::Arc;

use chrono::Utc;
use tonic::{Request, Response, Status};

use super::convert;
use super::pb;
use super::pb::headscale_service_server::HeadscaleService;
use crate::state::api_keys::{ApiKeyError, ApiKeySelector};
use crate::state::{NodeEntry, State, StateError};

/// How long a new API key is valid when the request names no expiration (Headscale's CLI
/// default).
pub const DEFAULT_API_KEY_VALIDITY: chrono::TimeDelta = chrono::TimeDelta::days(90);

/// The admin API over the tailnet state.
pub struct AdminService {
    state: Arc<State>,
}

impl AdminService {
    /// A service that reads and writes `state`.
    pub fn new(state: Arc<State>) -> Self {
        AdminService { state }
    }

    /// A node with its owner and registering key, as sent on the wire.
    async fn node_message(&self, entry: &NodeEntry) -> pb::Node {
        let keys = self.state.pre_auth_keys().await;
        convert::node(entry, &self.state.snapshot(), &keys)
    }

    fn user_id_by_name(&self, name: &str) -> Result<u64, Status> {
        self.state
            .snapshot()
            .user_by_name(name)
            .map(|u| u.id)
            .ok_or_else(|| status(StateError::UserNotFound(name.to_string())))
    }

    async fn register(&self, auth_id: &str, user: &str) -> Result<pb::Node, Status> {
        if auth_id.is_empty() {
            return Err(Status::invalid_argument("an auth id is required"));
        }
        if user.is_empty() {
            return Err(Status::invalid_argument("a user is required"));
        }
        let entry = self.state.approve_registration(auth_id, user).await.map_err(status)?;
        Ok(self.node_message(&entry).await)
    }
}

/// The gRPC status for a refused or failed write; the message is the error's text.
fn status(e: StateError) -> Status {
    let message = e.to_string();
    match e {
        StateError::Db(_) => Status::internal(message),
        StateError::UserNotFound(_)
        | StateError::NodeNotFound(_)
        | StateError::KeyNotFound(_)
        | StateError::RegistrationNotFound(_) => Status::not_found(message),
        StateError::UserExists(_) | StateError::NodeNameTaken(_) => Status::already_exists(message),
        StateError::InvalidUserName(_)
        | StateError::InvalidNodeName(_)
        | StateError::InvalidTag(_)
        | StateError::KeyWithoutOwner => Status::invalid_argument(message),
        StateError::UserHasNodes(_) | StateError::PolicyNotInDatabase | StateError::TagsRequired(_) => {
            Status::failed_precondition(message)
        }
        StateError::InvalidRoute(_)
        | StateError::TagNotInPolicy(_)
        | StateError::InvalidAuthId(_)
        | StateError::Tags(_) => Status::invalid_argument(message),
        StateError::Policy(_) => Status::invalid_argument(message),
        StateError::PolicyFile { .. } => Status::internal(message),
        StateError::Exhausted(_) | StateError::PendingFull(_) => Status::resource_exhausted(message),
    }
}

/// The gRPC status for a failed API key operation.
fn api_key_status(e: ApiKeyError) -> Status {
    let message = e.to_string();
    match e {
        ApiKeyError::Db(_) => Status::internal(message),
        ApiKeyError::NotFound(_) => Status::not_found(message),
        ApiKeyError::Malformed | ApiKeyError::Unknown(_) | ApiKeyError::WrongSecret(_) | ApiKeyError::Expired(..) => {
            Status::unauthenticated(message)
        }
    }
}

/// The key an expire or delete request names: by id when it is set (as Headscale does), else
/// by prefix.
fn api_key_selector(prefix: String, id: u64) -> Result<ApiKeySelector, Status> {
    match (id, prefix.is_empty()) {
        (0, true) => Err(Status::invalid_argument("name the API key by its prefix or its id")),
        (0, false) => Ok(ApiKeySelector::Prefix(prefix)),
        (id, _) => Ok(ApiKeySelector::Id(id)),
    }
}

#[tonic::async_trait]
impl HeadscaleService for AdminService {
    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let r = req.into_inner();
        let user = self.state.create_user(&r.name, &r.display_name, &r.email, &r.picture_url).await.map_err(status)?;
        Ok(Response::new(pb::CreateUserResponse { user: Some(convert::user(&user)) }))
    }

    async fn rename_user(
        &self,
        req: Request<pb::RenameUserRequest>,
    ) -> Result<Response<pb::RenameUserResponse>, Status> {
        let r = req.into_inner();
        let user = self.state.rename_user(r.old_id, &r.new_name).await.map_err(status)?;
        Ok(Response::new(pb::RenameUserResponse { user: Some(convert::user(&user)) }))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        self.state.delete_user(req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        let r = req.into_inner();
        let users = self
            .state
            .snapshot()
            .users
            .values()
            .filter(|u| r.id == 0 || u.id == r.id)
            .filter(|u| r.name.is_empty() || u.name == r.name)
            .filter(|u| r.email.is_empty() || u.email == r.email)
            .map(|u| convert::user(u))
            .collect();
        Ok(Response::new(pb::ListUsersResponse { users }))
    }

    async fn create_pre_auth_key(
        &self,
        req: Request<pb::CreatePreAuthKeyRequest>,
    ) -> Result<Response<pb::CreatePreAuthKeyResponse>, Status> {
        let r = req.into_inner();
        let expiration = match &r.expiration {
            Some(t) => {
                Some(convert::to_datetime(t).ok_or_else(|| Status::invalid_argument("expiration is out of range"))?)
            }
            None => None,
        };
        let user = (r.user != 0).then_some(r.user);
        let (key, secret) = self
            .state
            .create_pre_auth_key(user, r.reusable, r.ephemeral, expiration, r.acl_tags)
            .await
            .map_err(status)?;
        let snap = self.state.snapshot();
        let owner = key.user_id.and_then(|id| snap.user(id)).map(|u| u.as_ref());
        let message = convert::pre_auth_key(&key, owner, secret);
        Ok(Response::new(pb::CreatePreAuthKeyResponse { pre_auth_key: Some(message) }))
    }

    async fn expire_pre_auth_key(
        &self,
        req: Request<pb::ExpirePreAuthKeyRequest>,
    ) -> Result<Response<pb::ExpirePreAuthKeyResponse>, Status> {
        self.state.expire_pre_auth_key(req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(pb::ExpirePreAuthKeyResponse {}))
    }

    async fn delete_pre_auth_key(
        &self,
        req: Request<pb::DeletePreAuthKeyRequest>,
    ) -> Result<Response<pb::DeletePreAuthKeyResponse>, Status> {
        self.state.delete_pre_auth_key(req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(pb::DeletePreAuthKeyResponse {}))
    }

    async fn list_pre_auth_keys(
        &self,
        _: Request<pb::ListPreAuthKeysRequest>,
    ) -> Result<Response<pb::ListPreAuthKeysResponse>, Status> {
        let mut keys = self.state.pre_auth_keys().await;
        keys.sort_by_key(|k| k.id);
        let snap = self.state.snapshot();
        let pre_auth_keys = keys
            .iter()
            .map(|k| {
                let owner = k.user_id.and_then(|id| snap.user(id)).map(|u| u.as_ref());
                convert::pre_auth_key(k, owner, convert::masked_key(&k.prefix))
            })
            .collect();
        Ok(Response::new(pb::ListPreAuthKeysResponse { pre_auth_keys }))
    }

    async fn get_node(&self, req: Request<pb::GetNodeRequest>) -> Result<Response<pb::GetNodeResponse>, Status> {
        let id = req.into_inner().node_id;
        let entry = self.state.snapshot().node(id).cloned().ok_or_else(|| status(StateError::NodeNotFound(id)))?;
        Ok(Response::new(pb::GetNodeResponse { node: Some(self.node_message(&entry).await) }))
    }

    async fn list_nodes(&self, req: Request<pb::ListNodesRequest>) -> Result<Response<pb::ListNodesResponse>, Status> {
        let r = req.into_inner();
        let owner = if r.user.is_empty() { None } else { Some(self.user_id_by_name(&r.user)?) };
        let keys = self.state.pre_auth_keys().await;
        let snap = self.state.snapshot();
        let nodes = snap
            .nodes
            .values()
            .filter(|e| owner.is_none() || e.node.user_id == owner)
            .map(|e| convert::node(e, &snap, &keys))
            .collect();
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn delete_node(
        &self,
        req: Request<pb::DeleteNodeRequest>,
    ) -> Result<Response<pb::DeleteNodeResponse>, Status> {
        self.state.delete_node(req.into_inner().node_id).await.map_err(status)?;
        Ok(Response::new(pb::DeleteNodeResponse {}))
    }

    async fn expire_node(
        &self,
        req: Request<pb::ExpireNodeRequest>,
    ) -> Result<Response<pb::ExpireNodeResponse>, Status> {
        let r = req.into_inner();
        let at = if r.disable_expiry {
            None
        } else {
            match &r.expiry {
                Some(t) => {
                    Some(convert::to_datetime(t).ok_or_else(|| Status::invalid_argument("expiry is out of range"))?)
                }
                None => Some(Utc::now()),
            }
        };
        let entry = self.state.expire_node(r.node_id, at).await.map_err(status)?;
        Ok(Response::new(pb::ExpireNodeResponse { node: Some(self.node_message(&entry).await) }))
    }

    async fn rename_node(
        &self,
        req: Request<pb::RenameNodeRequest>,
    ) -> Result<Response<pb::RenameNodeResponse>, Status> {
        let r = req.into_inner();
        let entry = self.state.rename_node(r.node_id, &r.new_name).await.map_err(status)?;
        Ok(Response::new(pb::RenameNodeResponse { node: Some(self.node_message(&entry).await) }))
    }

    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        let r = req.into_inner();
        let node = self.register(&r.key, &r.user).await?;
        Ok(Response::new(pb::RegisterNodeResponse { node: Some(node) }))
    }

    async fn auth_register(
        &self,
        req: Request<pb::AuthRegisterRequest>,
    ) -> Result<Response<pb::AuthRegisterResponse>, Status> {
        let r = req.into_inner();
        let node = self.register(&r.auth_id, &r.user).await?;
        Ok(Response::new(pb::AuthRegisterResponse { node: Some(node) }))
    }

    async fn auth_approve(
        &self,
        req: Request<pb::AuthApproveRequest>,
    ) -> Result<Response<pb::AuthApproveResponse>, Status> {
        let id = req.into_inner().auth_id;
        Err(Status::failed_precondition(format!(
            "auth request {id:?} needs a user: complete it with `headscale auth register --auth-id {id} --user <name>`"
        )))
    }

    async fn auth_reject(
        &self,
        req: Request<pb::AuthRejectRequest>,
    ) -> Result<Response<pb::AuthRejectResponse>, Status> {
        let id = req.into_inner().auth_id;
        self.state.reject_registration(&id, "rejected by an administrator").map_err(status)?;
        Ok(Response::new(pb::AuthRejectResponse {}))
    }

    async fn health(&self, _: Request<pb::HealthRequest>) -> Result<Response<pb::HealthResponse>, Status> {
        let database_connectivity = self.state.database_ok().await;
        Ok(Response::new(pb::HealthResponse { database_connectivity }))
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let expiration = match &req.into_inner().expiration {
            Some(t) => convert::to_datetime(t).ok_or_else(|| Status::invalid_argument("expiration is out of range"))?,
            None => Utc::now() + DEFAULT_API_KEY_VALIDITY,
        };
        let (_, api_key) = self.state.create_api_key(expiration).await.map_err(api_key_status)?;
        Ok(Response::new(pb::CreateApiKeyResponse { api_key }))
    }

    async fn expire_api_key(
        &self,
        req: Request<pb::ExpireApiKeyRequest>,
    ) -> Result<Response<pb::ExpireApiKeyResponse>, Status> {
        let r = req.into_inner();
        let which = api_key_selector(r.prefix, r.id)?;
        self.state.expire_api_key(&which).await.map_err(api_key_status)?;
        Ok(Response::new(pb::ExpireApiKeyResponse {}))
    }

    async fn list_api_keys(
        &self,
        _: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let keys = self.state.api_keys().await.map_err(api_key_status)?;
        Ok(Response::new(pb::ListApiKeysResponse { api_keys: keys.iter().map(convert::api_key).collect() }))
    }

    async fn delete_api_key(
        &self,
        req: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        let r = req.into_inner();
        let which = api_key_selector(r.prefix, r.id)?;
        self.state.delete_api_key(&which).await.map_err(api_key_status)?;
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }

    async fn debug_create_node(
        &self,
        req: Request<pb::DebugCreateNodeRequest>,
    ) -> Result<Response<pb::DebugCreateNodeResponse>, Status> {
        let r = req.into_inner();
        let (owner, machine_key, request) =
            self.state.debug_create_node(&r.user, &r.key, &r.name, &r.routes).map_err(status)?;
        let node = pb::Node {
            machine_key: machine_key.to_string(),
            node_key: request.node_key.to_string(),
            name: r.name.clone(),
            given_name: r.name,
            user: self.state.snapshot().user(owner).map(|u| convert::user(u)),
            register_method: pb::RegisterMethod::Cli.into(),
            available_routes: r.routes,
            ..Default::default()
        };
        Ok(Response::new(pb::DebugCreateNodeResponse { node: Some(node) }))
    }

    async fn set_tags(&self, req: Request<pb::SetTagsRequest>) -> Result<Response<pb::SetTagsResponse>, Status> {
        let r = req.into_inner();
        let entry = self.state.set_tags(r.node_id, &r.tags).await.map_err(status)?;
        Ok(Response::new(pb::SetTagsResponse { node: Some(self.node_message(&entry).await) }))
    }

    async fn set_approved_routes(
        &self,
        req: Request<pb::SetApprovedRoutesRequest>,
    ) -> Result<Response<pb::SetApprovedRoutesResponse>, Status> {
        let r = req.into_inner();
        let entry = self.state.set_approved_routes(r.node_id, &r.routes).await.map_err(status)?;
        Ok(Response::new(pb::SetApprovedRoutesResponse { node: Some(self.node_message(&entry).await) }))
    }

    async fn backfill_node_i_ps(
        &self,
        req: Request<pb::BackfillNodeIPsRequest>,
    ) -> Result<Response<pb::BackfillNodeIPsResponse>, Status> {
        if !req.into_inner().confirmed {
            return Err(Status::failed_precondition("not confirmed, aborting: set confirmed to re-address nodes"));
        }
        let changes = self.state.backfill_node_ips().await.map_err(status)?;
        Ok(Response::new(pb::BackfillNodeIPsResponse { changes }))
    }

    async fn get_policy(&self, _: Request<pb::GetPolicyRequest>) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let (policy, updated_at) = self.state.policy_text().await.map_err(status)?;
        Ok(Response::new(pb::GetPolicyResponse { policy, updated_at: updated_at.map(convert::timestamp) }))
    }

    async fn set_policy(&self, req: Request<pb::SetPolicyRequest>) -> Result<Response<pb::SetPolicyResponse>, Status> {
        let policy = req.into_inner().policy;
        let updated_at = self.state.set_policy(&policy).await.map_err(status)?;
        Ok(Response::new(pb::SetPolicyResponse { policy, updated_at: Some(convert::timestamp(updated_at)) }))
    }

    async fn check_policy(
        &self,
        req: Request<pb::CheckPolicyRequest>,
    ) -> Result<Response<pb::CheckPolicyResponse>, Status> {
        self.state.check_policy(&req.into_inner().policy).map_err(status)?;
        Ok(Response::new(pb::CheckPolicyResponse {}))
    }
}
