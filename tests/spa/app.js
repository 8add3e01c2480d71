// A single-page app signing in with oidc-client-ts: the authorization code flow with PKCE,
// the user's claims from the ID token, a CORS fetch of /userinfo, and RP-initiated logout.
const origin = window.location.origin;
const users = new oidc.UserManager({
  authority: window.IDP_CONFIG.issuer,
  client_id: window.IDP_CONFIG.clientId,
  redirect_uri: `${origin}/callback`,
  post_logout_redirect_uri: `${origin}/signed-out`,
  scope: "openid profile email",
  loadUserInfo: false,
  automaticSilentRenew: false,
});

const show = (id, text) => {
  document.getElementById(id).textContent = text;
};

async function showUser(user) {
  show("username", user.profile.preferred_username ?? "");
  show("sub", user.profile.sub);
  const answer = await fetch(`${window.IDP_CONFIG.issuer}/userinfo`, {
    headers: { authorization: `Bearer ${user.access_token}` },
  });
  show("userinfo", answer.ok ? JSON.stringify(await answer.json()) : `HTTP ${answer.status}`);
}

document.getElementById("signin").onclick = () => users.signinRedirect();
document.getElementById("silent").onclick = () => users.signinRedirect({ prompt: "none" });
document.getElementById("signout").onclick = () => users.signoutRedirect();

async function start() {
  const path = window.location.pathname;
  try {
    if (path === "/callback") {
      const user = await users.signinRedirectCallback();
      window.history.replaceState({}, "", "/");
      await showUser(user);
      show("status", "signed in");
    } else if (path === "/signed-out") {
      await users.signoutRedirectCallback();
      show("status", "signed out");
    } else {
      const user = await users.getUser();
      if (user) await showUser(user);
      show("status", user ? "signed in" : "anonymous");
    }
  } catch (error) {
    show("error", error.error ?? String(error));
    show("status", "failed");
  }
}
start();
