//! `GET /api/agents`: the agents users can run, their models, and whether the user has the key
//! each needs.

use axum::Json;
use axum::extract::State;
use drydock_agents::AgentDefinition;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_agents))
}

/// A model an agent offers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// The CLI's model id.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Key provider it needs.
    pub provider: String,
    /// Whether the user has that key.
    pub has_key: bool,
}

/// An agent as the new-task form shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentInfo {
    /// Agent id.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Models, the default first.
    pub models: Vec<ModelInfo>,
    /// Whether the user can run it with at least one model.
    pub has_key: bool,
    /// Providers whose key the user would need to add for the models they cannot use yet.
    pub missing_providers: Vec<String>,
    /// Whether the agent can use MCP connectors.
    pub supports_connectors: bool,
}

/// The agents list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentList {
    /// Every agent, built-ins first.
    pub agents: Vec<AgentInfo>,
}

/// The provider a model needs: its own, or the agent's first key's.
pub fn model_provider<'a>(
    agent: &'a AgentDefinition,
    model_provider: Option<&'a str>,
) -> Option<&'a str> {
    model_provider.or_else(|| agent.keys.first().map(|k| k.provider.as_str()))
}

/// Lists agents with the user's key state.
#[utoipa::path(get, path = "/api/agents", tag = "agents",
    responses((status = 200, body = AgentList), (status = 401, body = ErrorBody)))]
async fn list_agents(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<AgentList>, AppError> {
    let keys = state.store.list_api_keys(&user.user.id).await?;
    let has = |provider: &str| keys.iter().any(|k| k.provider == provider);
    let agents = state
        .agents
        .agents()
        .iter()
        .map(|agent| {
            let models: Vec<ModelInfo> = agent
                .models
                .iter()
                .map(|m| {
                    let provider = model_provider(agent, m.provider.as_deref())
                        .unwrap_or_default()
                        .to_owned();
                    ModelInfo {
                        id: m.id.clone(),
                        name: m.name.clone(),
                        has_key: has(&provider),
                        provider,
                    }
                })
                .collect();
            let mut missing_providers: Vec<String> = models
                .iter()
                .filter(|m| !m.has_key)
                .map(|m| m.provider.clone())
                .collect();
            missing_providers.dedup();
            missing_providers.sort();
            missing_providers.dedup();
            AgentInfo {
                id: agent.id.clone(),
                name: agent.name.clone(),
                has_key: models.iter().any(|m| m.has_key),
                missing_providers,
                supports_connectors: agent.mcp.is_some(),
                models,
            }
        })
        .collect();
    Ok(Json(AgentList { agents }))
}
