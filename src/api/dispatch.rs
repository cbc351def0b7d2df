//! Calls an [`AdminService`] method by its protobuf name with a dynamic request message, the
//! same implementation gRPC clients reach: the message is re-encoded as the generated request
//! type, and the generated response is handed back as protobuf bytes.

use std::future::Future;

use prost::Message;
use prost_reflect::DynamicMessage;
use tonic::{Request, Response, Status};

use crate::grpc::pb::headscale_service_server::HeadscaleService;
use crate::grpc::AdminService;

/// Decodes `input` as `Req`, calls `method` and encodes its answer.
async fn invoke<Req, Resp, Fut>(
    input: &DynamicMessage,
    method: impl FnOnce(Request<Req>) -> Fut,
) -> Result<Vec<u8>, Status>
where
    Req: Message + Default,
    Resp: Message,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let request = Req::decode(input.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("cannot re-encode the request: {e}")))?;
    Ok(method(Request::new(request)).await?.into_inner().encode_to_vec())
}

/// Generates the match from method names to service calls.
macro_rules! dispatch {
    ($service:ident, $name:ident, $input:ident, { $($method:literal => $call:ident),* $(,)? }) => {
        match $name {
            $($method => invoke($input, |r| $service.$call(r)).await,)*
            other => Err(Status::unimplemented(format!("{other} has no REST mapping"))),
        }
    };
}

/// Calls the method named `name` (as in the `.proto`) with `input`, an instance of its request
/// type, and returns the encoded response.
pub async fn call(service: &AdminService, name: &str, input: &DynamicMessage) -> Result<Vec<u8>, Status> {
    dispatch!(service, name, input, {
        "CreateUser" => create_user,
        "RenameUser" => rename_user,
        "DeleteUser" => delete_user,
        "ListUsers" => list_users,
        "CreatePreAuthKey" => create_pre_auth_key,
        "ExpirePreAuthKey" => expire_pre_auth_key,
        "DeletePreAuthKey" => delete_pre_auth_key,
        "ListPreAuthKeys" => list_pre_auth_keys,
        "DebugCreateNode" => debug_create_node,
        "GetNode" => get_node,
        "SetTags" => set_tags,
        "SetApprovedRoutes" => set_approved_routes,
        "RegisterNode" => register_node,
        "DeleteNode" => delete_node,
        "ExpireNode" => expire_node,
        "RenameNode" => rename_node,
        "ListNodes" => list_nodes,
        "BackfillNodeIPs" => backfill_node_i_ps,
        "AuthRegister" => auth_register,
        "AuthApprove" => auth_approve,
        "AuthReject" => auth_reject,
        "CreateApiKey" => create_api_key,
        "ExpireApiKey" => expire_api_key,
        "ListApiKeys" => list_api_keys,
        "DeleteApiKey" => delete_api_key,
        "GetPolicy" => get_policy,
        "SetPolicy" => set_policy,
        "CheckPolicy" => check_policy,
        "Health" => health,
    })
}
