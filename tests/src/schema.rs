//! The example schema: tenant tables (`migrations_tenant/`) and a shared table.

use diesel_workspace::tenant_table;

tenant_table! {
    categories (id) {
        id -> Int4,
        name -> Text,
    }
}

tenant_table! {
    tags (id) {
        id -> Int4,
        label -> Text,
    }
}

tenant_table! {
    notes (id) {
        id -> Int4,
        category_id -> Nullable<Int4>,
        tag_id -> Nullable<Int4>,
        title -> Text,
        body -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    public.plans (id) {
        id -> Int4,
        name -> Text,
    }
}

diesel::joinable!(notes -> categories (category_id));
diesel::joinable!(notes -> tags (tag_id));
diesel::allow_tables_to_appear_in_same_query!(notes, categories, tags, plans);
