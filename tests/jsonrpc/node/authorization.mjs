// viem's own EIP-7702 check of an authorization signed by wallet-signer:
// `node authorization.mjs ADDRESS '{"chainId":"0x..","address":"0x..","nonce":"0x..","yParity":"0x..","r":"0x..","s":"0x.."}'`
// (the JSON exactly as wallet_signAuthorization returns it). Prints {valid, recovered}.
import { recoverAuthorizationAddress, verifyAuthorization } from "viem/utils";

const [address, json] = process.argv.slice(2);
const signed = JSON.parse(json);
const word = (hex) => "0x" + BigInt(hex).toString(16).padStart(64, "0");
const authorization = {
  address: signed.address, chainId: Number(BigInt(signed.chainId)),
  nonce: Number(BigInt(signed.nonce)), yParity: Number(BigInt(signed.yParity)),
  r: word(signed.r), s: word(signed.s),
};
console.log(JSON.stringify({
  valid: await verifyAuthorization({ address, authorization }),
  recovered: await recoverAuthorizationAddress({ authorization }),
}));
