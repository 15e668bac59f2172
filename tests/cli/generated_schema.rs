// @generated automatically by workspace-diesel print-schema.

diesel::table! {
    public.plans (id) {
        id -> Int4,
        name -> Text,
    }
}

diesel_workspace::tenant_table! {
    categories (id) {
        id -> Int4,
        name -> Text,
    }
}

diesel_workspace::tenant_table! {
    notes (id) {
        id -> Int4,
        category_id -> Nullable<Int4>,
        tag_id -> Nullable<Int4>,
        title -> Text,
        body -> Text,
        created_at -> Timestamptz,
    }
}

diesel_workspace::tenant_table! {
    tags (id) {
        id -> Int4,
        label -> Text,
    }
}

diesel::joinable!(notes -> categories (category_id));
diesel::joinable!(notes -> tags (tag_id));

diesel::allow_tables_to_appear_in_same_query!(
    categories,
    notes,
    plans,
    tags,
);
