//! The dashboard role built from the settings: the alert rules and channels
//! it shows, its cookies and its login policy.

use synchealth_dashboard::DashboardState;
use synchealth_store::SharedStore;

use crate::Settings;

/// The dashboard's state.
pub fn state(store: SharedStore, settings: &Settings) -> anyhow::Result<DashboardState> {
    Ok(DashboardState::new(store)
        .with_rules(settings.alerts.rules.clone())
        .with_channels(settings.alerts.channels.keys().cloned())
        .with_secure_cookies(settings.dashboard.secure_cookies)
        .with_auth_policy(settings.dashboard.auth_policy()?))
}
