//! Contacts: listed, added, edited, removed and called from the page.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{optional_body, Answer, ApiError, Body};
use crate::config::settings::SettingsError;
use crate::config::Contact;
use crate::web::Lan;

/// A contact as the page sends and shows it; its id is its place in the list, from 1.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ContactBody {
    name: String,
    number: String,
    #[serde(default)]
    button: Option<u8>,
    #[serde(default)]
    emergency: bool,
    /// Where it goes in the list (the emergency chain calls in this order), from 1.
    #[serde(default, skip_serializing)]
    position: Option<usize>,
}

pub(super) fn contact_json(id: usize, c: &Contact) -> Value {
    json!({ "id": id, "name": c.name, "number": c.number.as_str(), "button": c.button, "emergency": c.emergency })
}

/// The contacts as the settings layer stores them.
pub(super) fn contacts_list(contacts: &[Contact]) -> Vec<Value> {
    contacts
        .iter()
        .map(|c| json!({ "name": c.name, "number": c.number.as_str(), "button": c.button, "emergency": c.emergency }))
        .collect()
}

/// Validates and stores `changes` off the runtime (the settings file is synced to the card).
pub(super) async fn save(
    lan: &Lan,
    changes: Map<String, Value>,
) -> Result<crate::config::settings::Saved, SettingsError> {
    let settings = lan.settings.clone();
    match tokio::task::spawn_blocking(move || settings.update(&changes)).await {
        Ok(saved) => saved,
        Err(e) => {
            Err(SettingsError::Write { path: "settings.toml".into(), source: std::io::Error::other(e.to_string()) })
        }
    }
}

/// Stores a new contact list; errors about `contacts[i].x` are told as about the field `x`.
pub(super) async fn store_contacts(lan: &Lan, list: Value, edited: usize) -> Answer<()> {
    let mut changes = Map::new();
    changes.insert("contacts".into(), list);
    save(lan, changes).await.map(drop).map_err(|e| {
        let mut error = ApiError::from(e);
        if let Some(field) = &error.field {
            let prefix = format!("contacts[{edited}].");
            error.field = Some(field.strip_prefix(&prefix).map_or_else(|| field.clone(), str::to_owned));
        }
        error
    })
}

pub(super) async fn contacts(State(lan): State<Lan>) -> Json<Value> {
    let list: Vec<Value> = lan.settings.contacts().iter().enumerate().map(|(i, c)| contact_json(i + 1, c)).collect();
    let buttons: Vec<Value> = lan
        .appliance
        .call_slots()
        .into_iter()
        .map(|(button, slot)| json!({ "button": button, "slot": slot }))
        .collect();
    Json(json!({ "contacts": list, "buttons": buttons }))
}

pub(super) fn place(list: &mut Vec<Value>, entry: Value, position: Option<usize>) -> Answer<usize> {
    let at = match position {
        None => list.len(),
        Some(p) if (1..=list.len() + 1).contains(&p) => p - 1,
        Some(p) => {
            return Err(ApiError::bad("position", format!("{p} is out of range: expected 1 to {}", list.len() + 1)))
        }
    };
    list.insert(at, entry);
    Ok(at)
}

pub(super) fn entry(body: &ContactBody) -> Value {
    json!({ "name": body.name.trim(), "number": body.number, "button": body.button, "emergency": body.emergency })
}

pub(super) async fn add_contact(
    State(lan): State<Lan>,
    Body(body): Body<ContactBody>,
) -> Answer<(StatusCode, Json<Value>)> {
    let mut list = contacts_list(&lan.settings.contacts());
    let at = place(&mut list, entry(&body), body.position)?;
    store_contacts(&lan, Value::Array(list), at).await?;
    let contact = lan.settings.contacts().get(at).map(|c| contact_json(at + 1, c));
    Ok((StatusCode::CREATED, Json(contact.unwrap_or(Value::Null))))
}

pub(super) fn index(id: usize, len: usize) -> Answer<usize> {
    (1..=len)
        .contains(&id)
        .then(|| id - 1)
        .ok_or_else(|| ApiError::not_found(format!("no contact {id}: there are {len}")))
}

pub(super) async fn edit_contact(
    State(lan): State<Lan>,
    Path(id): Path<usize>,
    Body(body): Body<ContactBody>,
) -> Answer<Json<Value>> {
    let mut list = contacts_list(&lan.settings.contacts());
    let i = index(id, list.len())?;
    list.remove(i);
    let at = place(&mut list, entry(&body), body.position.or(Some(i + 1)))?;
    store_contacts(&lan, Value::Array(list), at).await?;
    let contact = lan.settings.contacts().get(at).map(|c| contact_json(at + 1, c));
    Ok(Json(contact.unwrap_or(Value::Null)))
}

pub(super) async fn delete_contact(State(lan): State<Lan>, Path(id): Path<usize>) -> Answer<StatusCode> {
    let mut list = contacts_list(&lan.settings.contacts());
    let i = index(id, list.len())?;
    list.remove(i);
    store_contacts(&lan, Value::Array(list), i).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct CallNow {
    #[serde(default)]
    emergency: bool,
}

/// "Call now": the box calls the contact, and the call plays on its speaker (as the button does).
pub(super) async fn call_contact(
    State(lan): State<Lan>,
    Path(id): Path<usize>,
    body: axum::body::Bytes,
) -> Answer<(StatusCode, Json<Value>)> {
    let body: CallNow = optional_body(&body)?;
    let contacts = lan.settings.contacts();
    let contact = contacts[index(id, contacts.len())?].clone();
    if !lan.settings.live().get().twilio.has_credentials() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Twilio is not set up: fill in the account SID, auth token and number in Settings",
        ));
    }
    let emergency = body.emergency;
    let appliance = lan.appliance.clone();
    let name = contact.name.clone();
    tokio::spawn(async move {
        appliance.call_contact(&contact, emergency).await;
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "calling": name }))))
}

// ---- settings and checks ----
