/** Entry of the clawrelay channel plugin for OpenClaw. */
import { defineChannelPluginEntry } from "openclaw/plugin-sdk/channel-core";
import { clawrelayPlugin, setRuntime } from "./channel.js";

export default defineChannelPluginEntry({
  id: "clawrelay",
  name: "clawrelay",
  description: "Connects OpenClaw to a clawrelay relay: durable delivery from apps to agents and back.",
  plugin: clawrelayPlugin,
  setRuntime,
});
