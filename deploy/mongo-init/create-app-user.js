// The service's own MongoDB user: readWrite on its database and nothing else (no admin, no
// user management, no other database). The official mongo image runs this file once, as the
// root user, when it initialises an empty data volume (/docker-entrypoint-initdb.d). The names
// and the password come from the container's environment (docker-compose.yml), never from
// this file.
const dbName = process.env.MONGO_APP_DB || "tmdb";
const user = process.env.MONGO_APP_USER;
const password = process.env.MONGO_APP_PASSWORD;
if (!user || !password) {
  throw new Error("MONGO_APP_USER and MONGO_APP_PASSWORD must be set");
}
db.getSiblingDB(dbName).createUser({
  user: user,
  pwd: password,
  roles: [{ role: "readWrite", db: dbName }],
});
print(`created user ${user}: readWrite on ${dbName}`);
