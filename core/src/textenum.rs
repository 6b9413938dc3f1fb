//! Maps enums stored as `text` columns to and from PostgreSQL through their `as_str` /
//! `from_db`, so a state is an enum in Rust and the same word in the database.

/// Implements diesel's `ToSql<Text, Pg>` and `FromSql<Text, Pg>` for an enum with
/// `fn as_str(self) -> &'static str` and `fn from_db(&str) -> Option<Self>`. The enum also
/// derives `diesel::AsExpression` and `diesel::FromSqlRow` with `sql_type = Text`. A word the
/// enum does not know is a deserialization error naming the column's type and the word.
#[macro_export]
macro_rules! text_enum_sql {
    ($ty:ty) => {
        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $ty {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $ty {
            fn from_sql(
                bytes: <diesel::pg::Pg as diesel::backend::Backend>::RawValue<'_>,
            ) -> diesel::deserialize::Result<Self> {
                let word = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Text,
                    diesel::pg::Pg,
                >>::from_sql(bytes)?;
                <$ty>::from_db(&word).ok_or_else(|| {
                    format!("unknown {} {word:?} in the database", stringify!($ty)).into()
                })
            }
        }
    };
}
