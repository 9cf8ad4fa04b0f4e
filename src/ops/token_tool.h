/*
 * `herald token`: prints a signed JSON Web Token that this herald accepts,
 * for scripts and tests. HS256 with a secret file (auth.jwt_secret), or
 * RS256/ES256 with a PEM private key (the algorithm follows the key type;
 * auth.jwt_public_key verifies). Claims: exp (--ttl), sub (--sub) and
 * herald.publish / herald.subscribe (--publish, --subscribe, repeatable),
 * as auth/jwt.h reads them.
 */
#ifndef HERALD_OPS_TOKEN_TOOL_H
#define HERALD_OPS_TOKEN_TOOL_H

/* argv[0] is "token". Returns the exit status: 0 printed, 2 bad usage, key or pattern. */
int hd_token_tool(int argc, char **argv);

#endif
