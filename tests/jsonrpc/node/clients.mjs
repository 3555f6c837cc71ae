// Real clients against the signer's JSON-RPC door, unchanged: `node clients.mjs ethers|viem URL ADDRESS TO`.
// Prints one JSON object: what each client got back and what its own verifiers say.
import * as ethers from "ethers";
import { createPublicClient, createWalletClient, http, parseTransaction,
         recoverTransactionAddress, verifyMessage, verifyTypedData } from "viem";
import { foundry } from "viem/chains";

const [client, url, address, to] = process.argv.slice(2);
const domain = { name: "wallet-signer test", version: "1", chainId: 31337,
                 verifyingContract: "0x" + "cc".repeat(20) };
const types = { Mail: [{ name: "from", type: "address" }, { name: "contents", type: "string" }] };
const mail = { from: to, contents: "hello over JSON-RPC" };

async function viaEthers() {
  const provider = new ethers.JsonRpcProvider(url, undefined, { staticNetwork: true });  // batching on
  const signer = await provider.getSigner(address);
  const sent = await signer.sendTransaction({ to, value: 12345n });
  const receipt = await sent.wait(1, 20000);
  const mined = await provider.getTransaction(receipt.hash);
  const message = await signer.signMessage("hello from ethers");
  const typed = await signer.signTypedData(domain, types, mail);
  const raw = await signer.signTransaction({ to, value: 1n, nonce: 1000, gasLimit: 21000n,
    chainId: 31337n, type: 2, maxFeePerGas: 2n * 10n ** 9n, maxPriorityFeePerGas: 10n ** 9n });
  provider.destroy();
  return {
    hash: receipt.hash, status: receipt.status, from: receipt.from, type: mined.type,
    messageSigner: ethers.verifyMessage("hello from ethers", message),
    typedSigner: ethers.verifyTypedData(domain, types, mail, typed),
    rawFrom: ethers.Transaction.from(raw).from, rawType: ethers.Transaction.from(raw).type,
  };
}

async function viaViem() {
  const wallet = createWalletClient({ account: address, chain: foundry, transport: http(url) });
  const reader = createPublicClient({ chain: foundry, transport: http(url) });
  const hash = await wallet.sendTransaction({ to, value: 777n });
  const receipt = await reader.waitForTransactionReceipt({ hash, timeout: 20000 });
  const message = await wallet.signMessage({ message: "hello from viem" });
  const typed = await wallet.signTypedData({ domain, types, primaryType: "Mail", message: mail });
  const raw = await wallet.signTransaction({ to, value: 1n, nonce: 2000, gas: 21000n,
    maxFeePerGas: 2n * 10n ** 9n, maxPriorityFeePerGas: 10n ** 9n });
  return {
    hash, status: receipt.status, from: receipt.from, type: receipt.type,
    messageValid: await verifyMessage({ address, message: "hello from viem", signature: message }),
    typedValid: await verifyTypedData({ address, domain, types, primaryType: "Mail",
                                        message: mail, signature: typed }),
    rawFrom: await recoverTransactionAddress({ serializedTransaction: raw }),
    rawType: parseTransaction(raw).type,
  };
}

const run = { ethers: viaEthers, viem: viaViem }[client];
console.log(JSON.stringify(await run()));
